"""Writes params['rows'] rows (5) to the Iceberg table <ns>.events and the Delta table <ns>.daily,
says so, then keeps the application running for five minutes: a test kills the worker meanwhile."""

import time

spark = globals()["spark"]
controlroom, params = globals()["controlroom"], globals()["params"]
ns, rows = params["ns"], int(params.get("rows", 5))
spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {controlroom.catalog}.{ns}")
df = spark.range(rows).selectExpr("id", f"'run {params['run_id']}' AS tag")
spark.sql(f"CREATE TABLE IF NOT EXISTS {controlroom.table(ns, 'events')} (id BIGINT, tag STRING) USING iceberg")
if not controlroom.committed(f"{ns}.events"):  # appends: a second write would duplicate the rows
    df.writeTo(controlroom.table(ns, "events")).append()
if not controlroom.committed(f"{ns}.daily"):
    df.write.format("delta").mode("append").save(controlroom.delta_path(ns, "daily"))
print("both tables committed", flush=True)
time.sleep(300)
