"""`spark` phases: a PySpark script run on local Spark, a standalone cluster or Spark Connect.

config::

    script: jobs/silver.py        a path in the job's git repository, read at the synced commit
                                  (kept with the job version: a run executes its version's code)
  or
    module: demo.spark.silver     an importable module listed in SPARK_MODULES (settings)
    args: ["--day", "2026-01-01"] its sys.argv after the script's name (strings)
    connection: spark             a connection of kind spark (``lakehouse.spark.target``);
                                  without one, local[2] in the worker's own JVM
    catalog: lakehouse            the catalog connection whose Iceberg catalog and Delta root the
                                  session is set up for (``lakehouse.spark.conf``)
    outputs: [silver.orders, {table: gold.revenue, format: delta}]   tables the script writes
    inputs:  [bronze.orders]                                          tables it reads (lineage)

The script gets ``spark`` (the configured session), ``params`` (the run's parameters), ``args``
and ``controlroom`` (``table(ns, name)``, ``delta_path(ns, name)``, ``committed(table)``).
Driver output streams into the run's log (secrets masked); the application id and UI link are
logged with the phase; stage progress becomes PHASE_PROGRESS. Cancel, timeout and a lost lease
stop the application (``lakehouse.spark.process``). What the application committed to the
declared outputs is recorded as table versions, once per phase (``lakehouse.spark.commits``).
Spark phases run only on workers that advertise the kind (the ``spark`` queue).
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings

from connections.models import Connection
from lakehouse.phases import common
from lakehouse.spark import commits
from lakehouse.spark.commits import Declared
from lakehouse.spark.target import SparkTarget, target_from
from runs.executors.base import PhaseFailure
from runs.models import Phase, RunEvent
from runs.services.fence import StaleLease, lease_fence

_FIELDS = {"script", "module", "args", "connection", "catalog", "outputs", "inputs", "mlflow"}
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,10}")
APP_KEY = "spark_app"  # the PHASE_LOG payload key naming an attempt's application


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a spark phase's config."""
    errors = [f"unknown spark config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    sources = [key for key in ("script", "module") if key in config]
    if len(sources) != 1:
        errors.append("give exactly one of 'script' (a .py path in the job's git repository) or 'module'")
    elif "script" in config and _script_path(config["script"]) is None:
        errors.append("'script' must be a relative path to a .py file inside the repository (no '..')")
    elif "module" in config and not (isinstance(config["module"], str) and _MODULE.fullmatch(config["module"])):
        errors.append("'module' must be a dotted Python module name")
    args = config.get("args", [])
    if not (isinstance(args, list) and len(args) <= 100 and all(isinstance(a, str) and len(a) <= 1000 for a in args)):
        errors.append("'args' must be a list of at most 100 strings")
    for key in ("connection", "catalog"):
        if key in config and not (isinstance(config[key], str) and common.CONN_NAME.fullmatch(config[key])):
            errors.append(f"'{key}' must be a connection's name (letters, digits, - and _)")
    return errors + commits.declared_errors(config)


def _script_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value.endswith(".py") or len(value) > 500 or "\\" in value:
        return None
    path = PurePosixPath(value)
    if path.is_absolute() or any(part in ("..", ".", "") for part in value.split("/")):
        return None
    return path.as_posix()


def repo_files(config: dict[str, Any]) -> list[str]:
    """The repository file a git sync keeps with the job version: the script."""
    path = _script_path(config.get("script"))
    return [path] if path else []


# --- execute ----------------------------------------------------------------------------------


def execute(ctx: Any) -> dict[str, Any]:
    """Run the script's application once per phase; record what it committed."""
    from lakehouse.spark import runtime
    from lakehouse.spark.conf import SparkConfError, session_conf

    config = ctx.phase.config
    lake = common.lakehouse_for(ctx, config)
    target = _target(ctx, config)
    outputs, inputs = commits.declared(config, "outputs"), commits.declared(config, "inputs")
    earlier = _earlier_apps(ctx)
    _kill_earlier(ctx, target, earlier)
    own_apps = target.kind != "connect"  # a Connect server's application is every session's
    done_before = {out: commits.committed_by(ctx, lake, out, {a for a, _ in earlier} if own_apps else set(),
                                             attempts={n for _, n in earlier}) for out in outputs}
    if outputs and all(done_before.values()):
        return _adopt(ctx, lake, done_before, earlier)
    script, script_name = _script(ctx, config)
    try:
        conf = session_conf(lake)
    except SparkConfError as exc:
        raise PhaseFailure(str(exc)) from None
    try:
        jars = runtime.ensure_jars() if target.kind != "connect" else []
        env = runtime.spark_env()
    except runtime.RuntimeMissing as exc:
        raise PhaseFailure(str(exc)) from None
    before = {out: commits.versions_now(lake, out) for out in outputs}
    read_at = {read: commits.current_version(lake, read) for read in inputs}
    public = {**conf.public, **target.conf, "spark.ui.showConsoleProgress": "false"}
    if settings.SPARK_DRIVER_HOST != "127.0.0.1":  # executors on other machines reach the driver there
        anywhere = "0.0.0.0"  # noqa: S104 (an operator's choice: SPARK_DRIVER_HOST, for remote executors)
        public.update({"spark.driver.host": settings.SPARK_DRIVER_HOST, "spark.driver.bindAddress": anywhere})
        env = {**env, "SPARK_LOCAL_IP": anywhere}
    if jars:
        public["spark.jars"] = ",".join(str(j) for j in jars)
    job = {"master": target.master, "app_name": f"controlroom run {ctx.run.pk} {ctx.phase.name}"[:100],
           "conf": public, "script": str(script), "script_name": script_name, "args": list(config.get("args", [])),
           "params": _jsonable(ctx.parameters), "tags": commits.tags(ctx), "catalog_name": conf.catalog_name,
           "delta_root": conf.delta_root, "committed": [o.qualified for o, v in done_before.items() if v]}
    from runs.mlflow import mlflow_env, mlflow_for_phase

    with mlflow_for_phase(ctx) as tracking:  # the driver gets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID… when asked
        app = _run_driver(ctx, target, job, {**env, **mlflow_env(tracking)}, conf)
    recorded = []
    for out in outputs:
        versions = commits.committed_by(ctx, lake, out, {app.get("id", "")} if own_apps else set(),
                                        attempts={ctx.phase.attempt}, before=before[out])
        if not versions:
            ctx.log(f"output {out.qualified}: the application committed nothing to it", level="warning")
        recorded += [commits.record(ctx, lake, out, v, attempt=ctx.phase.attempt) for v in versions]
    commits.record_reads(ctx, lake, inputs, read_at)
    return {"spark": {"application": app.get("id", ""), "id": app.get("id", ""), "ui": app.get("ui", ""),
                      "master_ui": app.get("master_ui", ""), "master": target.master},
            "tables": recorded}


def _target(ctx: Any, config: dict[str, Any]) -> SparkTarget:
    name = config.get("connection")
    if not name:
        return SparkTarget()
    conn = ctx.connection(name)
    if conn.kind != Connection.Kind.SPARK:
        raise PhaseFailure(f"Connection '{name}' is {conn.kind}, not spark.")
    return target_from(conn.config, name)


def _script(ctx: Any, config: dict[str, Any]) -> tuple[Any, str]:
    """(a file holding the code to run, the name the script sees as sys.argv[0])."""
    if "module" in config:
        allowed = getattr(settings, "SPARK_MODULES", [])
        if config["module"] not in allowed:
            raise PhaseFailure(f"module {config['module']!r} is not registered for spark phases (SPARK_MODULES)")
        spec = importlib.util.find_spec(config["module"])
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise PhaseFailure(f"module {config['module']!r} cannot be found on this worker")
        return spec.origin, spec.origin
    rel = config["script"]
    text = (ctx.run.job_version.files or {}).get(rel)
    if text is None:
        raise PhaseFailure(f"the script {rel} is read from the job's git repository at its commit, and this job "
                           "version has none: sync the job from git (a script is never taken from a form)")
    path = ctx.scratch / "script.py"
    path.write_text(text)
    return path, rel


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in values.items()}


def _earlier(ctx: Any, key: str) -> list[tuple[str, int]]:
    """(value of ``key``, attempt) from every earlier attempt's log events that carry ``key``; a
    later attempt's event means this one is stale (StaleLease)."""
    found = []
    for payload in RunEvent.objects.filter(phase_id=ctx.phase.pk, type="PHASE_LOG",
                                           payload__has_key=key).values_list("payload", flat=True):
        value, attempt = payload.get(key), payload.get("attempt")
        if isinstance(value, str) and value and isinstance(attempt, int) and attempt < ctx.phase.attempt:
            found.append((value, attempt))
        elif isinstance(attempt, int) and attempt > ctx.phase.attempt:
            raise StaleLease(f"phase {ctx.phase.pk}: attempt {attempt} started; attempt {ctx.phase.attempt} is stale")
    return found


def _earlier_apps(ctx: Any) -> list[tuple[str, int]]:
    """(application id, attempt) of every earlier attempt of this phase that started one."""
    return _earlier(ctx, APP_KEY)


def _earlier_sessions(ctx: Any) -> list[tuple[str, int]]:
    """(Spark Connect session id, attempt) of every earlier attempt of this phase that made one."""
    from lakehouse.spark.connect import SESSION_KEY

    return _earlier(ctx, SESSION_KEY)


def _stop_earlier_sessions(ctx: Any, target: SparkTarget) -> None:
    """On Spark Connect, what an earlier attempt's session still runs on the server (its client died
    with a killed worker) is interrupted, and the session released, before this attempt starts."""
    from lakehouse.spark import runtime
    from lakehouse.spark.connect import InterruptFailed, interrupt_sessions

    earlier = _earlier_sessions(ctx)
    if not earlier:
        return
    try:
        stopped = interrupt_sessions(target.master, [s for s, _ in earlier], driver_env(runtime.spark_env()))
    except (InterruptFailed, runtime.RuntimeMissing) as exc:
        raise PhaseFailure(f"the earlier attempts' Spark Connect sessions could not be stopped ({exc}): not "
                           "starting a second one beside them") from None
    for session, attempt in earlier:
        operations = stopped.get(session) or []
        ctx.log(f"stopped Spark Connect session {session} of attempt {attempt} before starting again"
                + (f" ({len(operations)} operation(s) were still running)" if operations else ""), level="warning")


def _kill_earlier(ctx: Any, target: SparkTarget, earlier: list[tuple[str, int]]) -> None:
    """An earlier attempt's application still running on the cluster is killed before this one starts."""
    from lakehouse.spark.process import master_apps, master_kill

    if target.kind == "connect":
        _stop_earlier_sessions(ctx, target)
        return
    if target.kind != "standalone" or not target.ui_url or not earlier:
        return
    try:
        states = master_apps(target.ui_url)
    except OSError as exc:
        raise PhaseFailure(f"the Spark master's UI {target.ui_url} cannot be reached to check the earlier "
                           f"attempt's application ({exc})") from None
    for app, attempt in earlier:
        if states.get(app) in ("RUNNING", "WAITING", "SUBMITTED"):
            state = master_kill(target.ui_url, app)
            ctx.log(f"killed application {app} of attempt {attempt} before starting again (now {state or 'gone'})",
                    level="warning")
            if state in ("RUNNING", "WAITING", "SUBMITTED"):
                raise PhaseFailure(f"the application {app} of attempt {attempt} is still running and could not be "
                                   "killed: not starting a second one beside it")


def _adopt(ctx: Any, lake: Any, done_before: dict[Declared, list[int]], earlier: list[tuple[str, int]]) -> dict:
    attempts = sorted({n for _, n in earlier})
    ctx.log(f"attempt(s) {attempts} already committed to every output: adopting, running nothing again",
            level="warning")
    recorded = [commits.record(ctx, lake, out, v, attempt=attempts[-1]) for out, vs in done_before.items() for v in vs]
    return {"spark": {"adopted": True, "applications": [a for a, _ in earlier]}, "tables": recorded}


# What a driver inherits from the worker's environment: nothing that names Control Room's database,
# keys or other workspaces' secrets (a script is user code); the Spark settings come on top.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


def driver_env(spark_env: dict[str, str]) -> dict[str, str]:
    """The driver's environment: a few harmless variables of the worker's, then Spark's own."""
    return {**{k: os.environ[k] for k in _INHERITED if k in os.environ}, **spark_env}


def _show(ctx: Any, app: dict[str, Any], progress: str = "") -> None:
    """The application (id, UI links) and its progress on the phase row while it runs, for the run
    page (fenced like every write; ``complete`` replaces it with the phase's output)."""
    shown = {k: app.get(k, "") for k in ("id", "ui", "master_ui")}
    with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
        Phase.objects.filter(pk=phase.pk).update(output={"spark": {**shown, "progress": progress}})


def _run_driver(ctx: Any, target: SparkTarget, job: dict[str, Any], env: dict[str, str], conf: Any) -> dict:
    """Start the driver, stream its output, stop it on cancel; the application's {id, ui}."""
    import json

    from lakehouse.spark.process import DriverProcess, Masker, master_kill

    folder = ctx.scratch / "spark"
    folder.mkdir(parents=True, exist_ok=True)
    masker = Masker(conf.masks())
    stopper = None
    if target.kind == "connect":  # the server holds the static settings; the session gets the rest
        from lakehouse.spark.connect import SESSION_KEY, SessionStopper, new_session_id, session_url

        _static, per_session = conf.connect_settings()
        session = new_session_id()  # recorded before the driver starts: a later attempt can stop it
        ctx.log(f"Spark Connect session {session} on {target.master}",
                **{SESSION_KEY: session, "attempt": ctx.phase.attempt})
        job = {**job, "conf": {}, "master": session_url(target.master, session)}
        stopper = SessionStopper(target.master, session, driver_env(env), lambda m: ctx.log(m, level="warning"))
        env = {**env, "CONTROLROOM_SPARK_SECRETS": json.dumps(per_session)}
        secret_properties = ""
    else:
        secret_properties = conf.secret_properties_text()
    driver = DriverProcess(job=job, folder=folder, env=driver_env(env), secret_properties=secret_properties,
                           masker=masker)
    app: dict[str, Any] = {}

    def stop() -> None:
        if stopper is not None:  # the server runs on without its client (a driver that ignores
            stopper.start()  # SIGTERM dies by SIGKILL): stop the session's operations there too
        driver.stop()
        if app.get("id") and target.kind == "standalone" and target.ui_url:
            master_kill(target.ui_url, app["id"])

    ctx.on_stop(stop)
    last_progress = 0.0
    try:
        for kind, value in driver.events():
            if kind == "app":
                if app or not isinstance(value, dict):  # announced once, before the script runs: a
                    # script printing an announcement of its own is not believed, only logged
                    ctx.log(masker(f"(not the driver's: ignored) {json.dumps(value)[:500]}"), level="warning")
                    continue
                app = {k: str(value.get(k) or "")[:300] for k in ("id", "ui", "session")}
                if not app["ui"].startswith(("http://", "https://")):
                    app["ui"] = ""
                if target.ui_url and app.get("id"):  # the master's page of the application outlives it
                    app["master_ui"] = f"{target.ui_url}/app/?appId={app['id']}"
                links = " ".join(f"{label} {app[key]}" for key, label in (("ui", "UI"), ("master_ui", "on the master"))
                                 if app.get(key))
                ctx.log(f"spark application {app.get('id') or '(connect session)'} started on {target.master}"
                        + (f": {links}" if links else ""),
                        **{APP_KEY: app.get("id", ""), "attempt": ctx.phase.attempt, "spark_ui": app.get("ui", ""),
                           "master_ui": app.get("master_ui", "")})
                _show(ctx, app)
                common.refuse_if_stopped(ctx)
                driver.answer("go")
            elif kind == "progress" and isinstance(value, dict):
                now = time.monotonic()
                if now - last_progress >= 1.0:
                    last_progress = now
                    stages = [s for s in value.get("stages") or [] if isinstance(s, dict)][:20]
                    text = ", ".join(f"stage {s.get('stage')}: {s.get('done')}/{s.get('tasks')} tasks"
                                     for s in stages)[:500]
                    ctx.progress(text or "no active stage", stages=stages)
                    _show(ctx, app, text)
            elif kind == "error" and isinstance(value, str):
                app["error"] = masker(value)
            elif kind == "log":
                ctx.log(value)
    except BaseException:
        stop()
        if stopper is not None:
            stopper.wait()
        raise
    status = driver.wait()
    if stopper is not None:
        stopper.wait()  # a cancel or timeout began it: done before the phase reports stopped
    if ctx.stopped:
        raise PhaseFailure("stopped: the Spark application was stopped")
    if status != 0:
        raise PhaseFailure(f"the Spark script failed: {app.get('error') or driver.error_line()}")
    return app
