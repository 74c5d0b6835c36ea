#!/bin/sh
# Entrypoint of compose's Spark services: pyspark's own Spark on the image's JDK 17 (Dockerfile,
# target "spark").
#
#   spark.sh spark-class CLASS ARGS...   a standalone daemon (the master or the worker)
#   spark.sh spark-submit ARGS...        an application (the Spark Connect server), with spark.jars
#                                        set to the project's pinned jars
#
# The JDK, Spark's home and the jars are found as the app finds them (lakehouse.spark.runtime): a
# JDK 17 only, and every jar checked against lakehouse/spark/jars/checksums.txt. The jars were
# fetched into the image at build time; a missing or altered one stops the start (the image has no
# Maven to fetch it again).
set -eu

JAVA_HOME="$(python -m lakehouse.spark.runtime --java17)"
SPARK_HOME="$(python -c 'from lakehouse.spark.runtime import spark_home; print(spark_home())')"
PATH="$JAVA_HOME/bin:$PATH"
export JAVA_HOME SPARK_HOME PATH

tool="${1:-}"
[ "$#" -gt 0 ] && shift
case "$tool" in
    spark-class)
        exec "$SPARK_HOME/bin/spark-class" "$@"
        ;;
    spark-submit)
        jars="$(python -c 'from lakehouse.spark.runtime import ensure_jars; print(",".join(map(str, ensure_jars())))')"
        exec "$SPARK_HOME/bin/spark-submit" --conf "spark.jars=$jars" "$@"
        ;;
    *)
        echo "usage: spark.sh spark-class CLASS ARGS... | spark-submit ARGS..." >&2
        exit 2
        ;;
esac
