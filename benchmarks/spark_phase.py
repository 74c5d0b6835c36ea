"""Spark phases: ``benchmarks/spark_job.py`` (spark.range(N) grouped into 1,000 keys, appended to an
Iceberg table of the embedded catalog) through a `spark` phase, ``run_create`` → run succeeded (Celery
eager: claim, driver process, application, commit recorded, run settled), against bare ``spark-submit
--master M --jars <the project's jars> --properties-file <the same session settings>`` of the same
file: rounds alternate, the first of each target is a warm-up; on ``local[2]`` and on a standalone
cluster (a master and one worker on loopback, ``tests/spark_cluster.py``). On the cluster, from the
master's JSON polled every 50 ms: trigger → the application RUNNING, and cancel → killed (a job of
sleeping tasks, ``run_cancel`` once its script runs, until the master shows it KILLED or FINISHED;
the cancel reaches the phase through its lease heartbeat, every PHASE_LEASE_TTL_S / 3, ``--lease-ttl``
1 s as in the tests); baseline: the same job bare, killed through the master UI's kill link.

    .venv/bin/python benchmarks/spark_phase.py [--rounds 4] [--runs 10] [--rows 10000000]
                                               [--bare-kills 3] [--lease-ttl 1] [--no-local]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first

JOB = Path(__file__).resolve().parent / "spark_job.py"
MODULE = "benchmarks.spark_job"
POLL_S = 0.05
LIVE = ("WAITING", "RUNNING", "SUBMITTED")
BEGAN = time.monotonic()


def step(message: str) -> None:
    """A progress line that stays (stderr), with the time since the start."""
    _common.say("")
    print(f"[{time.monotonic() - BEGAN:6.0f} s] {message}", file=sys.stderr, flush=True)


class Watcher(threading.Thread):
    """Started at once: polls the master for the first application it did not list before; its id
    and when the master first showed it RUNNING."""

    def __init__(self, ui_url: str) -> None:
        from lakehouse.spark.process import master_apps

        super().__init__(daemon=True)
        self.ui_url, self.apps, self.known = ui_url, master_apps, set(master_apps(ui_url))
        self.app_id, self.running_at, self.halt = "", 0.0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.wait(POLL_S) and not self.running_at:
            try:
                new = {a: s for a, s in self.apps(self.ui_url).items() if a not in self.known}
            except OSError:
                new = {}
            self.app_id = self.app_id or min(new, default="")
            if new.get(self.app_id) == "RUNNING":
                self.running_at = time.monotonic()

    def wait_running(self, timeout: float = 180.0) -> float:
        """The monotonic time the application showed RUNNING (exits after ``timeout``)."""
        self.join(timeout)
        self.halt.set()
        if not self.running_at:
            raise SystemExit(f"no new application RUNNING on the master within {timeout:.0f} s (seen {self.app_id!r})")
        return self.running_at


def poll(check, what: str, timeout: float = 60.0):
    """``check()``'s first truthy answer, tried every POLL_S; exits saying ``what`` failed after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL_S)
    return answer


def wait_ended(ui_url: str, app_id: str) -> tuple[float, str]:
    """(monotonic time, state) when the master stopped listing ``app_id`` as live."""
    from lakehouse.spark.process import master_apps

    state = poll(lambda: (s := master_apps(ui_url).get(app_id, "")) not in ("", *LIVE) and s,
                 f"the master to end {app_id}")
    return time.monotonic(), state


class Bare:
    """``spark-submit`` of ``spark_job.py`` with the phase's session settings, without Control Room."""

    def __init__(self, conf, jars: list[Path], env: dict[str, str], folder: Path) -> None:
        from lakehouse.spark.runtime import spark_home

        self.submit, self.conf = str(spark_home() / "bin" / "spark-submit"), conf
        self.jars, self.env, self.folder = jars, env, folder
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, master: str, target_conf: dict[str, str], args: list[str], name: str) -> subprocess.Popen:
        """Start spark-submit in a process group of its own (its output in a log file of ``name``)."""
        from lakehouse.trino_catalog import properties_text

        props = self.folder / f"{name}.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # secret entries too, as the phase's
        with os.fdopen(fd, "w") as fh:
            fh.write(properties_text({**self.conf.public, **self.conf.secret, **target_conf,
                                "spark.ui.showConsoleProgress": "false"}))
        cmd = [self.submit, "--master", master, "--name", f"bare {name}", "--jars", ",".join(map(str, self.jars)),
               "--properties-file", str(props), str(JOB), *args]
        self.log, self.marks = self.folder / f"{name}.log", {}
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # cwd: its spark-warehouse
        self.reader = threading.Thread(target=self._copy, args=(proc, self.log, self.marks), daemon=True)
        self.reader.start()
        return proc

    @staticmethod
    def _copy(proc: subprocess.Popen, log: Path, marks: dict[str, float]) -> None:
        """spark-submit's output into ``log``; when the script's lines came (monotonic)."""
        with log.open("wb") as out:
            for line in proc.stdout:
                out.write(line)
                if line.startswith((b"slow job starting", b"appended ")):
                    marks.setdefault(line.decode().split(" ")[0], time.monotonic())

    def finish(self, proc: subprocess.Popen, *, kill: bool = False) -> None:
        """Wait for spark-submit (``kill``: SIGTERM its group first); exit with its log's tail if it failed."""
        if kill:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        self.reader.join(10)
        if proc.returncode != 0 and not kill:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise SystemExit(f"bare spark-submit failed ({proc.returncode}):\n{tail}")


class Bench:
    """The workspace, its embedded lakehouse, a spark connection to the cluster, and the jobs."""

    def __init__(self, rows: int) -> None:
        from celery import current_app
        from django.conf import settings

        from controlroom.access import system_access
        from controlroom.models import Environment
        from lakehouse.catalogs import catalog_for
        from lakehouse.spark.conf import session_conf
        from lakehouse.spark.runtime import ensure_jars, spark_env
        from lakehouse.tasks import table_version_fingerprint

        settings.SPARK_MODULES = [MODULE]
        current_app.conf.task_always_eager = True
        table_version_fingerprint.delay = lambda *a, **k: None  # another worker's work, after complete
        self.rows, (self.workspace, _, _) = rows, _common.world()
        self.access = system_access(self.workspace)
        self.lake = catalog_for(self.workspace, Environment.objects.get(workspace=self.workspace, name="dev"))
        scratch, jars = Path(os.environ["CONTROLROOM_DATA_DIR"]) / "bare", ensure_jars()
        began = time.monotonic()
        ensure_jars()  # every phase on local or standalone calls it: sha256 of every jar
        self.jar_check = time.monotonic() - began
        self.bare = Bare(session_conf(self.lake), jars, {**os.environ, **spark_env()}, scratch)

    def job(self, key: str, args: list[str], *, connection: str = "", outputs: list[str] = ()):
        """A new job of one spark phase running ``spark_job.py`` with ``args``."""
        import yaml

        from runs.services.jobs import job_create

        config = {"module": MODULE, "args": args, **({"connection": connection} if connection else {}),
                  **({"outputs": list(outputs)} if outputs else {})}
        spec = {"name": f"bench-{key}", "phases": [{"name": "job", "kind": "spark", "timeout": 1800, "config": config}]}
        return job_create(access=self.access, spec_text=yaml.safe_dump(spec, sort_keys=False))

    cluster_conf = {"spark.cores.max": "2", "spark.executor.memory": "1g"}  # the connection's; bare gets them too

    def connect(self, cluster) -> None:
        """The workspace's spark connection ``cluster`` to the standalone master."""
        from connections.models import Connection

        Connection.objects.create(workspace=self.workspace, name="cluster", kind=Connection.Kind.SPARK,
                                  config={"master": cluster.master_url, "ui_url": cluster.ui_url,
                                          "conf": self.cluster_conf})

    def run(self, job) -> tuple[float, object]:
        """(seconds, run) of one run of ``job`` to its end, in this thread."""
        from runs.services.runs import run_create

        started = time.monotonic()
        run = run_create(access=self.access, job=job)
        return time.monotonic() - started, run

    def check(self, run, want: str = "succeeded"):
        """``run`` reloaded; exits with its log's tail unless it ended ``want``."""
        from runs.models import RunEvent

        run.refresh_from_db()
        if run.status != want:
            lines = list(RunEvent.objects.filter(run=run, type="PHASE_LOG").order_by("seq")
                         .values_list("message", flat=True))
            raise SystemExit(f"run {run.pk} ended {run.status}, not {want}: {run.error}\n" + "\n".join(lines[-30:]))
        return run


PHASE_PARTS = ("trigger → phase started", "phase started → application announced",
               "announced → script's last line", "script's last line → phase ended", "phase ended → run settled")


def breakdown(run) -> dict[str, float]:
    """Where a succeeded spark run's time went, from its rows and events (database clock)."""
    from runs.models import RunEvent

    phase = run.phases.get()
    events = RunEvent.objects.filter(run=run)
    started = events.get(type="PHASE_STARTED").ts
    announced = events.get(type="PHASE_LOG", payload__has_key="spark_app").ts
    last = events.filter(type="PHASE_LOG", message__startswith="appended ").values_list("ts", flat=True).first()
    if last is None:
        raise SystemExit(f"run {run.pk}: the script's last line is not in the log")
    marks = (run.created_at, started, announced, last, phase.finished_at, run.finished_at)
    parts = {name: (b - a).total_seconds() for name, a, b in zip(PHASE_PARTS, marks[:-1], marks[1:], strict=True)}
    parts["log lines"] = events.filter(type="PHASE_LOG").count()
    parts["progress events"] = events.filter(type="PHASE_PROGRESS").count()
    return parts


def overhead(bench: Bench, target: str, rounds: int, cluster=None) -> dict[str, list[float]]:
    """Alternating phase and bare rounds of the aggregation on ``target`` (round 0 not counted)."""
    slug, master, conf = ("local", "local[2]", {}) if cluster is None else (
        "cluster", cluster.master_url, bench.cluster_conf)
    job = bench.job(f"agg-{slug}", ["--table", f"bench.phase_{slug}", "--rows", str(bench.rows)],
                    connection="cluster" if cluster else "", outputs=[f"bench.phase_{slug}"])
    got: dict[str, list[float]] = collections.defaultdict(list)
    for i in range(rounds + 1):
        order = ("phase", "bare") if i % 2 == 0 else ("bare", "phase")
        line = []
        for side in order:
            watcher = Watcher(cluster.ui_url) if cluster is not None else None
            started = time.monotonic()
            if side == "phase":
                seconds, run = bench.run(job)
                run = bench.check(run)
                recorded = run.phases.get().output.get("tables", [])
                if len(recorded) != 1:
                    raise SystemExit(f"run {run.pk} recorded {recorded}, not one version of bench.phase_{slug}")
                for name, value in breakdown(run).items():
                    got[name].append(value)
            else:
                proc = bench.bare.start(master, conf, ["--table", f"bench.bare_{slug}", "--rows", str(bench.rows)],
                                        f"agg-{slug}-{i}")
                bench.bare.finish(proc)
                seconds = time.monotonic() - started
                got["bare_script"].append(bench.bare.marks["appended"] - started)
            running = watcher.wait_running(5) - started if watcher else 0.0
            line.append(f"{side} {seconds:.2f} s" + (f" (RUNNING after {running:.2f} s)" if watcher else ""))
            got[side].append(seconds)
            if watcher:
                got[f"{side}_running"].append(running)
        step(f"{target} round {i}/{rounds}{' (warm-up)' if i == 0 else ''}: {', '.join(line)}")
        if i == 0:
            got.clear()  # the warm-up is not counted
    return got


def cancels(bench: Bench, cluster, runs: int, bare_kills: int) -> dict[str, list[float]]:
    """Phase runs of the sleeping job cancelled once running, then bare submits killed on the master."""
    from django.db import connections

    from runs.models import PhaseState, Run, RunEvent, RunStatus
    from runs.services.runs import run_cancel

    job = bench.job("slow", ["--sleep", "120"], connection="cluster")
    got: dict[str, list] = collections.defaultdict(list)
    for i in range(runs):
        last = Run.objects.filter(job=job).order_by("-pk").values_list("pk", flat=True).first() or 0
        watcher = Watcher(cluster.ui_url)
        started = time.monotonic()
        worker = threading.Thread(target=lambda: (bench.run(job), connections.close_all()), daemon=True)
        worker.start()
        running = watcher.wait_running() - started
        run = Run.objects.get(job=job, pk__gt=last)  # committed before its dispatch
        poll(lambda run=run, worker=worker: not worker.is_alive() or RunEvent.objects.filter(
            run=run, type="PHASE_LOG", message__contains="slow job starting").exists(), f"run {run.pk}'s script", 120)
        if not worker.is_alive():
            bench.check(run, "running")
        asked = time.monotonic()
        run_cancel(access=bench.access, run=run)
        ended, state = wait_ended(cluster.ui_url, watcher.app_id)
        worker.join(60)
        run.refresh_from_db()
        phase = run.phases.get()
        if run.status != RunStatus.CANCELLED or phase.state != PhaseState.CANCELLED:
            raise SystemExit(f"run {run.pk} ended {run.status}, phase {phase.state}: {phase.error}")
        left = wait_idle(cluster)
        got["running"].append(running)
        got["killed"].append(ended - asked)
        got["states"].append(state)
        step(f"cancel {i + 1}/{runs}: trigger → RUNNING {running:.2f} s, cancel → {state} {ended - asked:.2f} s "
             f"(cores free after {left:.1f} s more)")
    for i in range(bare_kills):
        watcher = Watcher(cluster.ui_url)
        started = time.monotonic()
        proc = bench.bare.start(cluster.master_url, bench.cluster_conf, ["--sleep", "120"], f"slow-{i}")
        running = watcher.wait_running() - started
        poll(lambda: "slow" in bench.bare.marks, "the bare slow job to start", 120)
        asked = time.monotonic()
        cluster.kill_app(watcher.app_id)
        ended, state = wait_ended(cluster.ui_url, watcher.app_id)
        bench.bare.finish(proc, kill=True)
        left = wait_idle(cluster)
        got["bare_running"].append(running)
        got["bare_killed"].append(ended - asked)
        step(f"bare kill {i + 1}/{bare_kills}: submit → RUNNING {running:.2f} s, master kill → {state} "
             f"{ended - asked:.2f} s (cores free after {left:.1f} s more)")
    return got


def wait_idle(cluster) -> float:
    """Seconds until the cluster's worker has no core in use (no executor left)."""
    began = time.monotonic()
    poll(lambda: not any(w.get("coresused", 0) for w in cluster.master_state()["workers"]), "executors to end")
    return time.monotonic() - began


def row(label: str, values: list[float], extra: str = "") -> None:
    """One figure: median, min, max and count of ``values`` (seconds)."""
    if values:
        print(f"  {label:<44} median {statistics.median(values):6.2f} s  (min {min(values):.2f}, "
              f"max {max(values):.2f}, n={len(values)}){extra}")


def report(args, bench: Bench, results: dict[str, dict], cancel: dict | None) -> None:
    """The figures, on stdout."""
    print(f"Spark phase vs bare spark-submit: spark_job.py aggregating {args.rows:,} rows into 1,000 groups "
          f"appended to an Iceberg table (embedded catalog, local disk); control plane on PostgreSQL, "
          f"Celery eager; {args.rounds} counted rounds per target, alternating; the phase's jar check "
          f"(ensure_jars: sha256 of {len(bench.bare.jars)} jars) {bench.jar_check:.2f} s")
    for target, got in results.items():
        phase_med, bare_med = statistics.median(got["phase"]), statistics.median(got["bare"])
        print(f"{target}:")
        row("bare spark-submit, start → exit", got["bare"])
        row("  of which start → script's last line", got["bare_script"])
        row("spark phase, run_create → run succeeded", got["phase"])
        for name in PHASE_PARTS:
            row(f"  {name}", got[name])
        print(f"  ratio phase/bare {phase_med / bare_med:.2f}x, fixed cost (phase - bare) {phase_med - bare_med:+.2f} "
              f"s (target ≤ 1.1x plus a fixed cost); {statistics.median(got['log lines']):.0f} log lines and "
              f"{statistics.median(got['progress events']):.0f} progress events per run")
        row("trigger → RUNNING on the master, phase", got["phase_running"])
        row("spark-submit → RUNNING on the master, bare", got["bare_running"])
    if cancel:
        print(f"standalone cluster, a job of sleeping tasks (PHASE_LEASE_TTL_S={args.lease_ttl:g}: heartbeat every "
              f"{max(0.2, args.lease_ttl / 3):.2f} s):")
        row("trigger → application RUNNING", cancel["running"])
        row("bare spark-submit → RUNNING", cancel["bare_running"])
        row("cancel → application killed", cancel["killed"],
            f"; master showed {', '.join(sorted(set(cancel['states'])))} (issue's bound: 10 s)")
        row("bare: master UI kill → KILLED", cancel["bare_killed"])
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="counted overhead rounds per target (plus a warm-up)")
    parser.add_argument("--runs", type=int, default=10, help="cancelled runs (trigger → RUNNING, cancel → killed)")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--bare-kills", type=int, default=3, help="bare submits killed on the master (baseline)")
    parser.add_argument("--lease-ttl", type=float, default=1.0, help="PHASE_LEASE_TTL_S during the cancel runs")
    parser.add_argument("--no-local", action="store_true", help="skip the local[2] overhead rounds")
    args = parser.parse_args()
    from tests.spark_cluster import SparkCluster

    with _common.servers():
        from django.conf import settings

        bench = Bench(args.rows)
        step(f"PostgreSQL up; {len(bench.bare.jars)} Spark jars verified in {bench.jar_check:.2f} s; "
             f"lakehouse {bench.lake.uri}")
        results: dict[str, dict] = {}
        if not args.no_local and args.rounds:
            results["local[2]"] = overhead(bench, "local[2]", args.rounds)
        step("starting a standalone master and worker")
        with SparkCluster() as cluster:
            step(f"standalone cluster {cluster.master_url} up in {cluster.start_seconds:.1f} s")
            bench.connect(cluster)
            if args.rounds:
                results["standalone (1 worker, 2 cores)"] = overhead(bench, "standalone", args.rounds, cluster)
            settings.PHASE_LEASE_TTL_S = args.lease_ttl  # the heartbeat that carries the cancel (overhead done)
            cancel = cancels(bench, cluster, args.runs, args.bare_kills) if args.runs else None
        step(f"done in {time.monotonic() - BEGAN:.0f} s")
    report(args, bench, results, cancel)


if __name__ == "__main__":
    main()
