"""A long Spark job (a minute of sleeping tasks): for cancel and kill tests."""

import time

spark = globals()["spark"]
print("slow job starting", flush=True)
spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(60) or x).collect()
