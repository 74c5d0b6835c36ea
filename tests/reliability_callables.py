"""Phase callables for tests/test_reliability.py (listed in PHASE_CALLABLE_MODULES there)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from runs.callables import phase_callable
from runs.executors.context import PhaseContext, PhaseFailure


@phase_callable("slow_side_effect")
def slow_side_effect(ctx: PhaseContext, *, journal: str, seconds: float = 1.0, steps: int = 10) -> dict[str, Any]:
    """Work for ``seconds`` (stopping early if the lease is lost), then perform a side effect.

    The external effect (one line appended to ``journal`` per finished execution) happens at
    least once. The committed effect is the returned output: phase_complete stores it in the
    same transaction that checks the lease token, so only the attempt holding the live lease
    can commit it, exactly once per phase."""
    key = f"{ctx.run.pk}:{ctx.phase.name}"
    ctx.log(f"attempt {ctx.phase.attempt} of {key} started in pid {os.getpid()}")
    for _ in range(steps):
        time.sleep(seconds / steps)
        if ctx.stopped:
            raise PhaseFailure("stopped: the lease was lost or the run was cancelled")
    with Path(journal).open("a") as fh:  # O_APPEND: one short write per line, safe across processes
        fh.write(f"{key} {ctx.phase.attempt} {ctx.lease_token} {os.getpid()}\n")
    return {"effect": key, "attempt": ctx.phase.attempt, "token": ctx.lease_token, "pid": os.getpid()}
