"""A long operation on the server (two tasks sleeping a minute in the JVM), with no Python on the
executors: for cancel and kill tests on Spark Connect, where the operation runs on the server. It
swallows SIGTERM, as user code may, so stopping its driver takes SIGKILL, which releases nothing."""

import signal

spark = globals()["spark"]
signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
print("slow job starting", flush=True)
spark.sql("SELECT reflect('java.lang.Thread', 'sleep', CAST(60000 AS BIGINT)) FROM range(0, 2, 1, 2)").collect()
print("slow job done", flush=True)
