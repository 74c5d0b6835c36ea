"""Demo, Spark variant: bronze.orders_spark (Iceberg, all text) to silver.orders_spark (Iceberg): typed,
invalid rows left out, deduplicated (the latest copy of each order) and MERGEd on order_id, so a
rerun over the same bronze changes nothing it should not.

Run by a `spark` phase: ``spark`` (the configured session) and ``controlroom`` (table names) are
given; nothing here knows where the catalog or S3 is.
"""

spark = globals()["spark"]
controlroom = globals()["controlroom"]
bronze, silver = controlroom.table("bronze", "orders_spark"), controlroom.table("silver", "orders_spark")

spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {controlroom.catalog}.silver")
spark.sql(f"""
    CREATE TABLE IF NOT EXISTS {silver} (
        order_id INT, order_date DATE, customer_id STRING, country STRING, amount DECIMAL(12, 2),
        status STRING)
    USING iceberg""")
# All in SQL: Spark 4.1 with Iceberg 1.12 cannot plan DataFrame operations stacked on an Iceberg
# table's read ("No plan for TableReference"), so the deduplication is a subquery, not .where().
spark.sql(f"""
    CREATE OR REPLACE TEMPORARY VIEW incoming AS
    SELECT order_id, order_date, customer_id, country, amount, status FROM (
        SELECT CAST(order_id AS INT) AS order_id, CAST(order_date AS DATE) AS order_date, customer_id,
               upper(trim(country)) AS country, CAST(amount AS DECIMAL(12, 2)) AS amount,
               lower(status) AS status,
               row_number() OVER (PARTITION BY CAST(order_id AS INT)
                                  ORDER BY _ingested_at DESC, _run_id DESC) AS newest
        FROM {bronze}
        WHERE try_cast(order_id AS INT) IS NOT NULL AND try_cast(order_date AS DATE) IS NOT NULL
          AND try_cast(amount AS DECIMAL(12, 2)) IS NOT NULL AND coalesce(customer_id, '') <> ''
    ) WHERE newest = 1""")
spark.sql(f"""
    MERGE INTO {silver} t USING incoming s ON t.order_id = s.order_id
    WHEN MATCHED AND (t.order_date <> s.order_date OR t.customer_id <> s.customer_id
                      OR t.country <> s.country OR t.amount <> s.amount OR t.status <> s.status)
        THEN UPDATE SET *
    WHEN NOT MATCHED THEN INSERT *""")
print(f"silver: {spark.table(silver).count()} orders")
