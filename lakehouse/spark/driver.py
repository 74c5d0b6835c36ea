"""The driver program of a `spark` phase: ``python -m lakehouse.spark.driver <job.json>``.

Started by the phase (``lakehouse.phases.spark``) as a child process of the worker, in its own
process group and told to die with the worker (parent-death signal; the JVM pyspark starts exits
when this process's pipe to it closes). It never imports Django.

1. Opens the session: local or standalone through pyspark's JVM (``PYSPARK_SUBMIT_ARGS`` carries
   ``--properties-file`` with the secret settings, written 0600 by the phase: never a command-line
   argument), or Spark Connect (``sc://``, secrets set on the session once connected).
2. Announces the application (``@@controlroom {"app": {...}}`` on stdout) and waits for the phase
   to answer ``go`` on stdin: the phase records the application id under its lease first, so a
   later attempt always knows which application to kill and which commits were this attempt's.
3. Tags every commit of the session with the run, phase and attempt (Iceberg snapshot summary
   properties, Delta ``commitInfo.userMetadata``); Iceberg snapshots also carry ``spark.app.id``.
4. Reports stage progress (``@@controlroom {"progress": {...}}``) about once a second, and runs
   the script as ``__main__`` with ``spark``, ``params``, ``args`` and ``controlroom`` (helpers:
   ``table(namespace, name)``, ``delta_path(namespace, name)``, ``committed(table)``) in its
   globals and ``sys.argv = [script, *args]``.
5. SIGTERM (cancel, timeout, lost lease): cancels every job, stops the session and exits 143.
   A script error prints its traceback and exits 1; the phase takes the last line as its error.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

MARK = "@@controlroom "
DELTA_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
ICEBERG_SNAPSHOT_PROPERTY = "spark.sql.iceberg.snapshot-property."


def say(kind: str, value: Any) -> None:
    """One machine-readable line for the phase, flushed at once."""
    sys.stdout.write(f"{MARK}{json.dumps({kind: value}, separators=(',', ':'))}\n")
    sys.stdout.flush()


def open_session(job: dict[str, Any]) -> Any:
    """The configured SparkSession for the job's master."""
    from pyspark.sql import SparkSession

    public: dict[str, str] = job["conf"]
    if job["master"].startswith("sc://"):
        session = SparkSession.builder.remote(job["master"]).getOrCreate()
        secrets = json.loads(os.environ.pop("CONTROLROOM_SPARK_SECRETS", "{}") or "{}")
        for key, value in {**public, **secrets}.items():
            session.conf.set(key, value)
        return session
    builder = SparkSession.builder.master(job["master"]).appName(job["app_name"])
    for key, value in public.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def app_info(spark: Any, job: dict[str, Any]) -> dict[str, Any]:
    """The application's id and UI address, as far as the session can tell."""
    if job["master"].startswith("sc://"):
        return {"id": spark.conf.get("spark.app.id", None) or "", "ui": "", "session": spark.session_id}
    sc = spark.sparkContext
    return {"id": sc.applicationId, "ui": sc.uiWebUrl or ""}


def progress_loop(spark: Any, stop: threading.Event) -> None:
    """Report the active stages' task counts when they change, at most once a second."""
    tracker = spark.sparkContext.statusTracker()
    last = None
    while not stop.wait(1.0):
        try:
            stages = []
            for stage_id in sorted(tracker.getActiveStageIds()):
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    stages.append({"stage": stage_id, "name": info.name[:120], "tasks": info.numTasks,
                                   "done": info.numCompletedTasks, "failed": info.numFailedTasks})
        except Exception:  # the context is stopping: progress is best effort
            return
        if stages != last and (stages or last):  # nothing to say before the first stage
            say("progress", {"stages": stages})
            last = stages


def tag_commits(spark: Any, tags: dict[str, str]) -> None:
    """Every commit of the session carries the run, phase and attempt: Iceberg snapshot summaries
    (``spark.sql.iceberg.snapshot-property.*``, Iceberg 1.11+) and Delta's commitInfo.userMetadata."""
    for key, value in tags.items():
        spark.conf.set(f"{ICEBERG_SNAPSHOT_PROPERTY}{key}", value)
    spark.conf.set(DELTA_USER_METADATA, json.dumps(tags, separators=(",", ":"), sort_keys=True))


def connect_progress(spark: Any) -> None:
    """Spark Connect streams each operation's stage progress: report it at most once a second."""
    last = [0.0]

    def handler(stages: Any, inflight_tasks: int, operation_id: str, done: bool) -> None:
        now = time.monotonic()
        if not done and now - last[0] < 1.0:
            return
        last[0] = now
        say("progress", {"stages": [{"stage": s.stage_id, "name": "", "tasks": s.num_tasks,
                                     "done": s.num_completed_tasks, "failed": 0} for s in stages]})

    spark.registerProgressHandler(handler)


def error_text(exc: BaseException) -> str:
    """One line for the phase's error: the exception, or for a JVM error its Java exception."""
    java = getattr(exc, "java_exception", None)  # py4j's Py4JJavaError: the useful part is Java's
    if java is not None:
        with contextlib.suppress(Exception):  # the JVM is gone: Python's own line below
            return str(java.toString()).strip().splitlines()[0][:1000]
    lines = "".join(traceback.format_exception_only(exc)).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:1000]


class Helpers:
    """What a script gets as ``controlroom``: names of this session's lakehouse tables."""

    def __init__(self, spark: Any, job: dict[str, Any]) -> None:
        self.spark, self.job = spark, job

    @property
    def catalog(self) -> str:
        """The Iceberg catalog's name in Spark SQL."""
        return self.job["catalog_name"]

    def table(self, namespace: str, name: str) -> str:
        """``catalog.namespace.name``: an Iceberg table of this lakehouse, for SQL or ``spark.table``."""
        return f"{self.catalog}.{namespace}.{name}"

    def delta_path(self, namespace: str, name: str) -> str:
        """The folder of the Delta table ``namespace.name`` (``delta.`<path>``` in SQL)."""
        return f"{self.job['delta_root'].rstrip('/')}/{namespace}/{name}"

    def committed(self, table: str) -> bool:
        """Whether an earlier attempt of this phase already committed to ``table`` (namespace.name):
        a script writing several tables may skip what an interrupted attempt finished."""
        return table in self.job.get("committed", [])


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text())
    spark = open_session(job)

    def stop_on_signal(signum: int, frame: Any) -> None:
        try:
            if job["master"].startswith("sc://"):
                spark.interruptAll()
            else:
                spark.sparkContext.cancelAllJobs()
            spark.stop()
        finally:
            os._exit(143)

    signal.signal(signal.SIGTERM, stop_on_signal)
    say("app", app_info(spark, job))
    if sys.stdin.readline().strip() != "go":  # the phase could not record the application
        spark.stop()
        return 3
    tag_commits(spark, job["tags"])
    stop = threading.Event()
    if job["master"].startswith("sc://"):
        connect_progress(spark)
    else:
        threading.Thread(target=progress_loop, args=(spark, stop), daemon=True).start()
    sys.argv = [job["script_name"], *job["args"]]
    started, status = time.monotonic(), 0
    try:
        runpy.run_path(job["script"], init_globals={"spark": spark, "params": job["params"], "args": job["args"],
                                                    "controlroom": Helpers(spark, job)}, run_name="__main__")
    except SystemExit as exc:  # the script's own sys.exit(n)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if status:
            print(f"SystemExit: the script exited with status {exc.code}", file=sys.stderr)
    except BaseException as exc:
        traceback.print_exc()
        sys.stderr.flush()
        say("error", error_text(exc))
        status = 1
    finally:
        stop.set()
    say("done", {"seconds": round(time.monotonic() - started, 3), "status": status})
    spark.stop()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
