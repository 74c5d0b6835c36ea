"""Demo, Spark variant: silver.orders_spark (Iceberg) to gold.daily_revenue_spark (Delta, beside it
on the catalog's Delta root): paid revenue by day, rebuilt whole each run."""

spark = globals()["spark"]
controlroom = globals()["controlroom"]
silver = controlroom.table("silver", "orders_spark")

daily = spark.sql(f"""
    SELECT order_date, count(*) AS orders, sum(amount) AS revenue
    FROM {silver} WHERE status = 'paid'
    GROUP BY order_date ORDER BY order_date""")
daily.write.format("delta").mode("overwrite").option("overwriteSchema", "true") \
    .save(controlroom.delta_path("gold", "daily_revenue_spark"))
print(f"gold: {daily.count()} days")
