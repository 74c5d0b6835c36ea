"""Where a `spark` phase runs: a connection of kind ``spark`` in the workspace, or embedded.

A spark connection's config::

    {"master": "local[2]" | "spark://host:7077" | "sc://host:15002",
     "ui_url": "http://host:8080",            (standalone: the master's web UI, to show and kill apps)
     "conf": {"spark.executor.memory": "2g"}} (a few resource settings; see ALLOWED_CONF)

Without a connection a phase runs embedded, ``local[2]``, in the worker's own JVM. The catalog,
S3 and jar settings are never taken from the connection: the session gets them from the
environment's catalog (``lakehouse.spark.conf``), so a connection cannot point a workspace's
Spark at another workspace's tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MASTER = "local[2]"
_LOCAL = re.compile(r"local\[(\*|[1-9][0-9]?)\]")
_KEYS = {"master", "ui_url", "conf"}
# Resource and tuning settings a connection may set; everything else (jars, catalogs, S3, Java
# options, the master) is Control Room's to set.
ALLOWED_CONF = re.compile(
    r"spark\.(executor\.(memory|cores|instances)|cores\.max|driver\.memory|default\.parallelism|"
    r"sql\.shuffle\.partitions|sql\.adaptive\.enabled|task\.cpus|dynamicAllocation\.(enabled|minExecutors|"
    r"maxExecutors))")
_VALUE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class SparkTarget:
    """A resolved place to run: the master URL, the UI of a standalone master, extra settings."""

    master: str = DEFAULT_MASTER
    ui_url: str = ""
    conf: dict[str, str] = field(default_factory=dict)
    name: str = ""  # the connection's name ("" when embedded)

    @property
    def kind(self) -> str:
        """"local", "standalone" or "connect"."""
        if self.master.startswith("spark://"):
            return "standalone"
        return "connect" if self.master.startswith("sc://") else "local"


def _host_port_ok(url: str, scheme: str) -> bool:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == scheme and bool(parts.hostname) and port is not None and parts.username is None
            and parts.password is None and parts.path in ("", "/") and not parts.query and not parts.fragment)


def target_config_errors(config: Any) -> list[str]:
    """What is wrong with a spark connection's config, one message per problem."""
    if not isinstance(config, dict):
        return ["a spark connection's config must be a JSON object"]
    errors = [f"unknown spark config key {key!r}" for key in sorted(set(config) - _KEYS)]
    master = config.get("master")
    if not isinstance(master, str) or not (
            _LOCAL.fullmatch(master) or _host_port_ok(master, "spark") or _host_port_ok(master, "sc")):
        errors.append("'master' must be local[N], spark://host:port (a standalone master) or sc://host:port "
                      "(Spark Connect)")
    ui = config.get("ui_url", "")
    if ui:
        parts = urlsplit(ui) if isinstance(ui, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
                or parts.password or parts.query or parts.fragment:
            errors.append("'ui_url' must be the master's web UI as an http:// or https:// URL without credentials")
    conf = config.get("conf", {})
    if not isinstance(conf, dict):
        errors.append("'conf' must be an object of Spark settings")
    else:
        for key, value in conf.items():
            if not (isinstance(key, str) and ALLOWED_CONF.fullmatch(key)):
                errors.append(f"'conf' may not set {str(key)[:80]!r}: a connection sets resources only "
                              "(executor/driver memory and cores, parallelism, shuffle partitions)")
            elif not (isinstance(value, (str, int)) and not isinstance(value, bool) and _VALUE.fullmatch(str(value))):
                errors.append(f"'conf' value of {key!r} must be a short plain value such as 2g or 4")
    return errors


def target_from(config: dict[str, Any] | None, name: str = "") -> SparkTarget:
    """The target a valid connection config (None: embedded) describes."""
    if not config:
        return SparkTarget()
    return SparkTarget(master=config["master"], ui_url=str(config.get("ui_url") or "").rstrip("/"),
                       conf={k: str(v) for k, v in (config.get("conf") or {}).items()}, name=name)
