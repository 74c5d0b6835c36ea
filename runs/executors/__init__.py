"""Phase executors by kind. Each validates its config at spec time and runs a phase."""

from __future__ import annotations

from typing import Any

from runs.executors import python as python_executor
from runs.executors import sql as sql_executor
from runs.executors.context import PhaseContext, PhaseFailure

EXECUTORS = {"sql": sql_executor, "python": python_executor}

__all__ = ["EXECUTORS", "PhaseContext", "PhaseFailure", "config_errors", "execute"]


def config_errors(kind: str, config: dict[str, Any]) -> list[str]:
    executor = EXECUTORS.get(kind)
    if executor is None:
        return [f"unknown phase kind {kind!r}"]
    return executor.config_errors(config)


def execute(ctx: PhaseContext) -> dict[str, Any]:
    """Run the phase; return its output dict or raise PhaseFailure with a user message."""
    return EXECUTORS[ctx.phase.kind].execute(ctx) or {}
