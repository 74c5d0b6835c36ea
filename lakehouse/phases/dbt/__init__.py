"""`dbt` phases: a dbt project from the job's git repository, built on a DuckDB or Trino connection.

config::

    project: analytics/shop       the dbt project's folder in the job's git repository, checked
                                  out at the run's git sha ("." for the repository's root); or
                                  datasets://dbt/shop, a folder of the workspace's datasets
    command: build                build (default), run, test, seed or snapshot
    select: "stg_customers+"      dbt selectors (a string of space-separated ones, or a list)
    exclude: [tag:slow]
    connection: warehouse         a DuckDB or Trino connection of the run's environment
    vars: {batch: 3}              dbt vars (the run's parameters and run_id are vars too)
    target_schema: analytics      the schema dbt builds in (DuckDB: main; Trino: the connection's)

dbt runs as a subprocess of the worker, from its own virtualenv (``lakehouse.phases.dbt.env``,
installed on first use), with a ``profiles.yml`` written into the phase's scratch folder only
(0600, removed with it) holding the one connection's credentials, resolved from its secret
references at the moment of use. Its output streams into the run's log (secret values masked);
cancel, the phase's timeout and a lost lease interrupt it (dbt cancels its queries) and kill its
process group after a grace period. Its environment is scrubbed: a dbt project is user code, as
a spark script is (README, *A script is user code*).

Afterwards ``manifest.json`` and ``run_results.json`` are stored as artifacts; every dbt test is
a check result (logged and listed in the output as a ``check`` phase's are), the failing rows of
failing tests (``--store-failures``) read back into ``failing_rows.parquet`` (at most 100 per
test); every model, seed and snapshot dbt built is a table version in the registry (format
``duckdb`` or ``trino``) with a write edge, and every relation the built models read (their
``depends_on.nodes``: sources, seeds, other models) a read edge. A failed node fails the phase
with one line naming it. Phases of this kind need Control Room's database (connections, the
registry): the standalone executor does not run them.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

from runs.executors.base import PhaseFailure

COMMANDS = ("build", "run", "test", "seed", "snapshot")
DATASETS_PREFIX = "datasets://"
_FIELDS = {"project", "command", "select", "exclude", "connection", "vars", "target_schema"}
CONN_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # as lakehouse.phases.common (not imported: no Django here)
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SELECTOR = re.compile(r"[\w.:+*@/,=-]{1,300}")  # dbt's selector syntax; never an option ("-x")
MAX_SELECTORS = 100
MAX_VARS_BYTES = 64 * 1024


def project_path(value: Any) -> tuple[str, str] | None:
    """("git" or "datasets", the relative folder) of a ``project`` value, or None when it is not a
    relative path that stays inside its root (no ``..``, no absolute path, no backslash)."""
    if not isinstance(value, str) or not value or len(value) > 500 or "\\" in value or "\x00" in value:
        return None
    where, rel = ("datasets", value[len(DATASETS_PREFIX):]) if value.startswith(DATASETS_PREFIX) else ("git", value)
    rel = rel.strip("/") if where == "datasets" else rel.rstrip("/")
    if rel in ("", "."):
        return (where, ".") if where == "git" else None
    if PurePosixPath(rel).is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        return None
    return where, rel


def selectors(value: Any) -> list[str] | None:
    """The selector tokens of a ``select``/``exclude`` value, or None when it is malformed."""
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        items = value
    else:
        return None
    tokens = [token for item in items for token in item.split()]
    if not tokens or len(tokens) > MAX_SELECTORS or any(
            not _SELECTOR.fullmatch(token) or token.startswith("-") for token in tokens):
        return None
    return tokens


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a dbt phase's config, one message per problem."""
    errors = [f"unknown dbt config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    if "project" not in config:
        errors.append("dbt phases need 'project': the dbt project's folder in the job's git repository "
                      "(or datasets://folder)")
    elif project_path(config["project"]) is None:
        errors.append("'project' must be a relative folder inside the repository (no '..', no absolute path), "
                      "or datasets://folder")
    command = config.get("command", "build")
    if command not in COMMANDS:
        errors.append(f"'command' must be one of {', '.join(COMMANDS)}, not {command!r}")
    for key in ("select", "exclude"):
        if key in config and selectors(config[key]) is None:
            errors.append(f"'{key}' must be dbt selectors: a string or a list of at most {MAX_SELECTORS} "
                          "(letters, digits and . : + * @ / , = -; none starting with '-')")
    if "connection" in config and not (isinstance(config["connection"], str)
                                       and CONN_NAME.fullmatch(config["connection"])):
        errors.append("'connection' must be a connection's name (letters, digits, - and _)")
    if "vars" in config:
        values = config["vars"]
        try:
            size = len(json.dumps(values, allow_nan=False))
        except (TypeError, ValueError):
            size = None
        if not isinstance(values, dict) or not all(isinstance(k, str) and k for k in values):
            errors.append("'vars' must be a mapping of names to values")
        elif size is None or size > MAX_VARS_BYTES:
            errors.append(f"'vars' must be plain values (text, numbers, lists, mappings), at most "
                          f"{MAX_VARS_BYTES // 1024} KiB as JSON")
    if "target_schema" in config and not (isinstance(config["target_schema"], str)
                                          and _SCHEMA.fullmatch(config["target_schema"])):
        errors.append("'target_schema' must be a plain identifier (letters, digits and _)")
    return errors


def repo_files(config: dict[str, Any]) -> list[str]:
    """The file a git sync checks and keeps with the job version: the project's dbt_project.yml
    (so a sync refuses a job whose project is missing at that commit)."""
    where = project_path(config.get("project"))
    if where is None or where[0] != "git":
        return []
    return ["dbt_project.yml" if where[1] == "." else f"{where[1]}/dbt_project.yml"]


def repo_trees(config: dict[str, Any]) -> list[str]:
    """The repository folder the phase runs: the whole project. A git sync keeps its tree id with
    the job version, so a change to any model makes a new version at its commit."""
    where = project_path(config.get("project"))
    return [where[1]] if where is not None and where[0] == "git" else []


def execute(ctx: Any) -> dict[str, Any]:
    """Check out the project, run dbt, then record artifacts, checks, tables and lineage."""
    from lakehouse.phases.dbt.runner import dbt_phase_run

    if getattr(ctx, "run", None) is None or getattr(ctx, "connection", None) is None:
        raise PhaseFailure("dbt phases run on Control Room's workers only, not on a standalone executor.")
    return dbt_phase_run(ctx)


__all__ = ["COMMANDS", "config_errors", "execute", "project_path", "repo_files", "repo_trees", "selectors"]
