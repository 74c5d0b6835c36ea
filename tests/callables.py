"""Test-only phase callables (listed in PHASE_CALLABLE_MODULES by the tests that use them)."""

from __future__ import annotations

from pathlib import Path

from runs.callables import phase_callable
from runs.executors.context import PhaseContext


@phase_callable("record_side_effect")
def record_side_effect(ctx: PhaseContext, *, path: str) -> dict:
    """Append one line per execution, so a test can count how often the phase really ran."""
    with Path(path).open("a") as fh:
        fh.write(f"{ctx.phase.pk}:{ctx.phase.attempt}\n")
    ctx.log("side effect recorded")
    return {"recorded": True}


@phase_callable("crash")
def crash(ctx: PhaseContext) -> None:
    raise KeyError("an executor bug")
