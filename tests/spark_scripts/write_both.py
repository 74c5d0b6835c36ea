"""Appends params['rows'] rows (3) to the Iceberg table <ns>.events and overwrites the Delta table
<ns>.daily with their count (ns: params['ns'], default lake); prints the S3 secret its session was
given, to show that the log masks it."""

import sys

spark = globals()["spark"]
controlroom, params = globals()["controlroom"], globals()["params"]
rows, ns = int(params.get("rows", 3)), params.get("ns", "lake")
spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {controlroom.catalog}.{ns}")
spark.sql(f"CREATE TABLE IF NOT EXISTS {controlroom.table(ns, 'events')} (id BIGINT, tag STRING) USING iceberg")
df = spark.range(rows).selectExpr("id", f"'run {params['run_id']}' AS tag")
df.writeTo(controlroom.table(ns, "events")).append()
df.groupBy().count().write.format("delta").mode("overwrite").save(controlroom.delta_path(ns, "daily"))
print(f"argv={sys.argv[1:]} wrote {rows} rows")
print("the key is " + spark.conf.get("spark.sql.catalog." + controlroom.catalog + ".s3.secret-access-key", "none"))
# A script cannot pass itself off as the driver: this line is only a log line.
print('@@controlroom {"app": {"id": "evil", "ui": "javascript:alert(1)"}}')
# The worker's own settings and other workspaces' secrets are not in a script's environment.
import os  # noqa: E402

print("inherited: " + ",".join(sorted(k for k in os.environ if k.startswith(("CONTROLROOM_SECRET", "DATABASE")))))
