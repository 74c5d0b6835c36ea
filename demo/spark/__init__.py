"""PySpark scripts of the demo Spark variant, run by spark phases (registered in SPARK_MODULES)."""
