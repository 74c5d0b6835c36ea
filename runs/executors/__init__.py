"""Phase executors by kind (``runs.kinds``). Each validates its config at spec time and runs a phase."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from runs.executors.base import PhaseContextProtocol, PhaseFailure
from runs.kinds import KINDS

__all__ = ["AFTER_SUCCESS", "PhaseContext", "PhaseContextProtocol", "PhaseFailure", "config_errors", "execute",
           "executor_for", "repo_files", "repo_trees"]

log = logging.getLogger(__name__)

# Called with (ctx, output) after any phase succeeds, before it is recorded as succeeded: what every
# kind inherits (the lakehouse registers the Delta tables a phase wrote in Trino). A hook must not
# fail the phase: what it raises is logged and ignored.
AFTER_SUCCESS: list[Callable[[Any, dict[str, Any]], None]] = []


def __getattr__(name: str) -> Any:
    # The in-process context needs Django's models; the standalone executor imports this
    # package before Django is set up, so the context is loaded only when asked for.
    if name == "PhaseContext":
        from runs.executors.context import PhaseContext

        return PhaseContext
    raise AttributeError(name)


def executor_for(kind: str) -> ModuleType | None:
    """The module that runs phases of this kind, or None for a kind nobody registered."""
    module = KINDS.get(kind)
    return importlib.import_module(module) if module else None


def config_errors(kind: str, config: dict[str, Any]) -> list[str]:
    """What is wrong with a phase's config, as messages for the spec's author."""
    executor = executor_for(kind)
    if executor is None:
        return [f"unknown phase kind {kind!r}"]
    return executor.config_errors(config)


def repo_files(kind: str, config: dict[str, Any]) -> list[str]:
    """The repository paths a phase runs (a spark phase's script), which a git sync reads at the
    synced commit and keeps with the job version. A kind opts in with ``repo_files(config)``."""
    executor = executor_for(kind)
    wanted = getattr(executor, "repo_files", None)
    return list(wanted(config)) if wanted else []


def repo_trees(kind: str, config: dict[str, Any]) -> list[str]:
    """The repository folders a phase runs as a whole (a dbt project): a git sync keeps each one's
    tree id with the job version, so a change to any file in it makes a new version at its commit.
    A kind opts in with ``repo_trees(config)``."""
    executor = executor_for(kind)
    wanted = getattr(executor, "repo_trees", None)
    return list(wanted(config)) if wanted else []


def execute(ctx: PhaseContextProtocol) -> dict[str, Any]:
    """Run the phase; return its output dict or raise PhaseFailure with a user message.

    The phase's timeout is enforced here for every kind: when it passes, the context's stop
    hooks stop whatever engine the phase started, and the phase fails saying so."""
    executor = executor_for(ctx.phase.kind)
    if executor is None:
        raise PhaseFailure(f"This worker does not know the phase kind {ctx.phase.kind!r}.")
    timeout_s = getattr(ctx.phase, "timeout_s", None)
    timer = threading.Timer(timeout_s, ctx.time_out) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        output = executor.execute(ctx) or {}
    except PhaseFailure:
        if ctx.timed_out:
            raise PhaseFailure(f"timed out after {timeout_s} s") from None
        raise
    finally:
        if timer:
            timer.cancel()
    if ctx.timed_out:
        raise PhaseFailure(f"timed out after {timeout_s} s")
    for hook in AFTER_SUCCESS:
        try:
            hook(ctx, output)
        except Exception:  # the phase's work is done and committed: a hook's failure is logged only
            log.exception("after-success hook %s of phase %s", getattr(hook, "__qualname__", hook),
                          getattr(ctx.phase, "pk", None))
    return output
