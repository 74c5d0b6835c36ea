"""Spark: the runtime (JDK 17, pyspark, pinned jars), session configuration and the spark phase driver."""
