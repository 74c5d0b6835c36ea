"""PySpark scripts the spark phase tests run (as registered modules)."""
