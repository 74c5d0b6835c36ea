"""One dbt phase from start to end: project, profile, the dbt process, then what it left.

See ``lakehouse.phases.dbt`` for the config and what is recorded."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lakehouse.phases.dbt import project_path, selectors
from lakehouse.phases.dbt.env import DbtMissing, dbt_install, dbt_installed
from lakehouse.phases.dbt.process import ChildProcess, dbt_command
from lakehouse.phases.dbt.project import project_checkout
from lakehouse.phases.dbt.results import (
    checks_of,
    failed_nodes,
    failing_rows,
    invocation_load,
    tables_record,
)
from lakehouse.phases.dbt.target import PROFILE, TARGET, DbtTarget, profiles_write, target_for
from runs.executors.base import PhaseFailure

MAX_LOG_LINES = 5000
FAILING_ROWS_ARTIFACT = "failing_rows.parquet"
_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d(\.\d+)?\s+")
_LEVEL = re.compile(r"\b(ERROR|FAIL)\b")
# What a dbt process inherits from the worker: nothing that names Control Room's database, keys or
# other workspaces' secrets (a dbt project is user code); its own settings come on top.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME")


def dbt_phase_run(ctx: Any) -> dict[str, Any]:
    """Run the phase's dbt command; see the package docstring."""
    config = ctx.phase.config
    command = config.get("command", "build")
    where, rel = project_path(config["project"]) or ("git", ".")
    target = target_for(ctx, config, command)
    project = project_checkout(ctx, where, rel)
    dbt = _dbt(ctx)
    folders = {name: ctx.scratch / name for name in ("target", "logs", "home", "tmp")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    profiles = profiles_write(ctx.scratch / "profiles", target)
    args = [command, "--project-dir", str(project), "--profiles-dir", str(profiles), "--profile", PROFILE,
            "--target", TARGET, "--target-path", str(folders["target"]), "--log-path", str(folders["logs"]),
            "--no-use-colors", "--no-partial-parse", "--vars", json.dumps(_vars(ctx, config))]
    for key in ("select", "exclude"):
        if key in config:
            args += [f"--{key}", *(selectors(config[key]) or [])]
    if command in ("build", "test") and target.writable:
        args.append("--store-failures")
    began = time.monotonic()
    status, tail = _run(ctx, dbt, args, profiles)
    seconds = round(time.monotonic() - began, 2)
    ctx.log(f"dbt {command} exited with status {status} after {seconds} s", dbt_status=status, seconds=seconds)
    output = _record(ctx, target, folders["target"], command, read_back=not ctx.stopped)
    output["dbt"].update(command=command, project=config["project"], connection=target.connection.name,
                         exit_status=status, seconds=seconds)
    failed = output.pop("_failed")
    if ctx.stopped or status != 0:
        _keep_output(ctx, output)  # a failed phase keeps its checks and tables on the run page too
    if ctx.stopped:
        raise PhaseFailure(f"stopped: dbt {command} was stopped")
    if status != 0:
        raise PhaseFailure(_failure(command, failed, tail, status))
    return output


def _keep_output(ctx: Any, output: dict[str, Any]) -> None:
    """The output on the phase row, under the lease, before the phase fails (which keeps it)."""
    from runs.models import Phase
    from runs.services.fence import lease_fence

    with lease_fence(phase_id=ctx.phase.pk, lease_token=ctx.lease_token) as phase:
        Phase.objects.filter(pk=phase.pk).update(output={**output, "artifacts": list(ctx.outputs)})


def _dbt(ctx: Any) -> Path:
    found = dbt_installed()
    if found is not None:
        return found
    ctx.log("installing dbt into its virtualenv on this worker (once per requirements-dbt.lock)")
    try:
        return dbt_install(progress=ctx.log)
    except DbtMissing as exc:
        raise PhaseFailure(str(exc)) from None


def _vars(ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters (text for what JSON cannot hold) and run_id, then the config's vars."""
    plain = (str, int, float, bool, type(None))
    params = {k: (v if isinstance(v, plain) else str(v)) for k, v in ctx.parameters.items() if k != "datasets_dir"}
    return {**params, **(config.get("vars") or {})}


def _env(ctx: Any, profiles: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(HOME=str(ctx.scratch / "home"), TMPDIR=str(ctx.scratch / "tmp"), DBT_PROFILES_DIR=str(profiles),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    return env


def _run(ctx: Any, dbt: Path, args: list[str], profiles: Path) -> tuple[int, list[str]]:
    """Run dbt, streaming its lines into the log; (exit status, its last lines)."""
    child = ChildProcess([*dbt_command(dbt), *args], env=_env(ctx, profiles), cwd=ctx.scratch)
    ctx.log(f"dbt {args[0]} started (pid {child.pid})", dbt_pid=child.pid)
    ctx.on_stop(child.stop)
    tail: list[str] = []
    count = 0
    try:
        for raw in child.lines():
            line = _TIMESTAMP.sub("", raw).rstrip()
            if not line.strip():
                continue
            tail = [*tail[-49:], line]
            count += 1
            if count <= MAX_LOG_LINES:
                level = "error" if _LEVEL.search(line) else "warning" if "WARN" in line else "info"
                ctx.log(line[:4000], level=level)
            elif count == MAX_LOG_LINES + 1:
                ctx.log(f"dbt printed more than {MAX_LOG_LINES} lines: the rest is not logged", level="warning")
    except BaseException:
        child.stop()
        child.wait()
        raise
    return child.wait(), tail


def _record(ctx: Any, target: DbtTarget, target_dir: Path, command: str, *, read_back: bool) -> dict[str, Any]:
    """Artifacts, checks, tables and lineage from what dbt wrote; the phase's output. A stopped
    phase (``read_back`` False) reads nothing more from the engine: its artifacts only."""
    output: dict[str, Any] = {"dbt": {}, "checks": [], "tables": [], "_failed": []}
    for name in ("manifest.json", "run_results.json"):
        if (target_dir / name).is_file():
            ctx.add_artifact(name=name, path=target_dir / name, media_type="application/json")
    inv = invocation_load(target_dir)
    if inv is None or not read_back:
        return output
    counts: dict[str, int] = {}
    for result in inv.results:
        counts[str(result.get("status"))] = counts.get(str(result.get("status")), 0) + 1
    output["dbt"]["results"] = counts
    output["_failed"] = failed_nodes(inv)
    checks = checks_of(inv)
    for check, _node in checks:
        level = {"pass": "info", "warn": "warning", "fail": "error"}.get(check.status, "info")
        detail = f": {check.message}" if check.message else ""
        ctx.log(f"check {check.name} ({check.type}, {check.severity}) {check.status}{detail}", level=level,
                check=check.as_dict())
    output["checks"] = [check.as_dict() for check, _node in checks]
    rows = failing_rows(target, checks)
    if rows is not None:
        path = ctx.scratch / FAILING_ROWS_ARTIFACT
        pq.write_table(rows, path)
        ctx.add_artifact(name=FAILING_ROWS_ARTIFACT, path=path, media_type="application/vnd.apache.parquet")
        output["failing_rows_artifact"] = FAILING_ROWS_ARTIFACT
    output["tables"] = tables_record(target, inv)
    return output


def _failure(command: str, failed: list[str], tail: list[str], status: int) -> str:
    """One line: the failed nodes (five at most), else dbt's own error line."""
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        return f"dbt {command} failed: {shown}"
    for index, line in enumerate(tail):
        if line.strip() == "Encountered an error:" and index + 1 < len(tail):
            return f"dbt {command} failed: {tail[index + 1].strip()[:500]}"
    errors = [line for line in tail if _LEVEL.search(line) or "Error" in line]
    last = (errors or tail or [f"exit status {status}"])[-1]
    return f"dbt {command} failed: {last.strip()[:500]}"
