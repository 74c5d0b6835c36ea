"""The PySpark job of ``benchmarks/spark_phase.py``: runs the same way through a `spark` phase
(``module: benchmarks.spark_job``, which hands it ``spark``) and bare with ``spark-submit`` (it
opens its session from the properties file it was given).

    spark_job.py --table <namespace.name> [--rows N]   spark.range(N) grouped into 1,000 keys
                                                         (count, sum, avg, min, max), appended to
                                                         the Iceberg table of the session's catalog
    spark_job.py --sleep S                              S seconds of sleeping tasks, one per core
                                                         (to cancel or kill it while it runs)
"""

import argparse
import sys
import time

from pyspark.sql import SparkSession

ICEBERG_CATALOG_KEY = "spark.controlroom.iceberg_catalog"  # lakehouse.spark.conf, set on every session


def main(spark: SparkSession, argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", default="bench.agg")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.sleep:
        print("slow job starting", flush=True)
        cores = spark.sparkContext.defaultParallelism
        spark.sparkContext.parallelize(range(cores), cores).map(lambda x: time.sleep(args.sleep) or x).collect()
        return
    catalog = spark.conf.get(ICEBERG_CATALOG_KEY)
    namespace = args.table.split(".")[0]
    table = f"{catalog}.{args.table}"
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} (k BIGINT, n BIGINT, total BIGINT, mean DOUBLE, lo BIGINT, "
              "hi BIGINT) USING iceberg")
    out = spark.sql(f"""
        SELECT id % 1000 AS k, count(*) AS n, sum(id * 7 % 1013) AS total, avg(id * 7 % 1013) AS mean,
               min(id) AS lo, max(id) AS hi
        FROM range({args.rows}) GROUP BY id % 1000""")
    out.writeTo(table).append()
    print(f"appended 1000 groups of {args.rows:,} rows to {table}", flush=True)


if __name__ == "__main__":
    session = globals().get("spark") or SparkSession.builder.getOrCreate()
    main(session, sys.argv[1:])
