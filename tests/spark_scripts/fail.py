"""Fails with a clear Python error after printing a line."""

spark = globals()["spark"]
print("about to divide")
spark.range(1).count()
raise ValueError("the input is not what this script expects")
