"""Phase outcomes, in-worker execution, and the reaper.

Outcomes are written only under the live lease. A failed attempt is retried after an
exponential backoff with full jitter while attempts remain; a success unblocks the phases
whose dependencies have now all succeeded.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from controlroom.masking import mask_text, mask_value
from controlroom.metrics import count
from runs.models import EventType, Phase, PhaseState, Run, RunEvent, RunStatus
from runs.services.events import StaleLease, event_append
from runs.services.leases import lease_ttl, phase_claim, phase_heartbeat
from runs.services.runs import run_settle

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0
TIMEOUT_GRACE_S = 5
REPORT_RETRIES = 6
LEASE_SAFETY = 0.9  # share of a lease's life after which unrenewed engine work is stopped


def runnable_phases(*, run_id: int) -> list[Phase]:
    """Pending, unblocked phases of the run (their due time is not considered)."""
    return list(Phase.objects.filter(run_id=run_id, state=PhaseState.PENDING, blocked=False))


def retry_delay_s(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


def _unblock_dependents(phase: Phase) -> None:
    waiting = [p for p in Phase.objects.filter(run_id=phase.run_id, blocked=True).only("id", "depends_on")
               if phase.name in p.depends_on]
    if not waiting:
        return
    done = set(Phase.objects.filter(run_id=phase.run_id, state=PhaseState.SUCCEEDED).values_list("name", flat=True))
    ready = [p.pk for p in waiting if set(p.depends_on) <= done]
    if ready:
        Phase.objects.filter(pk__in=ready).update(blocked=False)


def _end_attempt(current: Phase, *, outcome: str, error: str, output: dict[str, Any] | None, now,
                 reason: str = "failed") -> None:
    duration = (now - current.started_at).total_seconds() if current.started_at else None
    payload: dict[str, Any] = {"attempt": current.attempt, "duration_s": duration}
    if outcome == PhaseState.SUCCEEDED:
        current.state, current.output = PhaseState.SUCCEEDED, output or {}
        event = (EventType.PHASE_SUCCEEDED, "info", f"{current.name} succeeded in {duration:.2f} s")
    elif outcome == PhaseState.CANCELLED:
        current.state, current.output = PhaseState.CANCELLED, output or current.output
        event = (EventType.PHASE_CANCELLED, "warning", f"{current.name} cancelled" + (f" ({error})" if error else ""))
    elif current.attempt < current.max_attempts:
        current.state, current.not_before = PhaseState.PENDING, now + timedelta(seconds=retry_delay_s(current.attempt))
        count("controlroom_phase_retries", kind=current.kind, reason=reason)  # a requeue when the lease expired
        payload["due"] = current.not_before.isoformat()
        event = (EventType.PHASE_RETRY_SCHEDULED, "warning",
                 f"{current.name} failed: {error}; retry {current.attempt + 1}/{current.max_attempts} "
                 f"at {current.not_before:%H:%M:%S}")
    else:
        current.state = PhaseState.FAILED
        event = (EventType.PHASE_FAILED, "error", f"{current.name} failed: {error}")
    current.error, current.finished_at, current.lease_token, current.lease_expires_at = error[:4000], now, "", None
    current.save()
    # The event first: its seq UPDATE takes the run's row lock, so two phases of one run ending
    # together serialise here, and the later one's dependency check sees the earlier success.
    event_append(run=current.run, phase=current, type=event[0], level=event[1], message=event[2], payload=payload)
    if current.state == PhaseState.SUCCEEDED:
        _unblock_dependents(current)


def phase_complete(
    *, phase: Phase, lease_token: str, succeeded: bool, error: str = "", output: dict[str, Any] | None = None,
    cancelled: bool = False,
) -> Phase:
    """Record the outcome under the live lease; retry if attempts remain; settle the run. The
    error and output are stored with the workspace's secrets masked (controlroom.masking)."""
    workspace_id = phase.run.workspace_id
    error, output = mask_text(workspace_id, error), mask_value(workspace_id, output)
    if succeeded and not cancelled and connection.vendor == "postgresql":  # one statement, then the follow-ups
        from runs.services import pgclaim

        done = pgclaim.complete_succeeded(phase_id=phase.pk, run_id=phase.run_id, name=phase.name,
                                          lease_token=lease_token, output=output or {}, now=timezone.now())
        if done is not None:  # else a stale token or a cancelled run: the path below says which
            current, unfinished, cancel_requested = done
            if not unfinished or cancel_requested:
                run_settle(run_id=current.run_id)
            return current
    with transaction.atomic():
        # The run row first (as run_cancel and the fast path lock it): a cancel committed before
        # this outcome is seen, and one still committing is waited for.
        cancel_requested = Run.objects.select_for_update().filter(pk=phase.run_id).values_list(
            "cancel_requested", flat=True).first()
        current = Phase.objects.select_for_update(of=("self",)).select_related("run").filter(
            pk=phase.pk, lease_token=lease_token, state=PhaseState.RUNNING, lease_expires_at__gt=timezone.now()
        ).first()
        if current is None:
            raise StaleLease(f"phase {phase.pk}: lease token is no longer valid")
        outcome = PhaseState.CANCELLED if cancelled else PhaseState.SUCCEEDED if succeeded else PhaseState.FAILED
        if cancel_requested and outcome != PhaseState.CANCELLED:
            # A phase of a run asked to cancel never ends succeeded (nor retries): it was told to
            # stop; what it finished before hearing so is kept in its output and said in the event.
            error = error or "its work finished after the run was asked to cancel; its outputs are kept"
            outcome = PhaseState.CANCELLED
        _end_attempt(current, outcome=outcome, error=error, output=output, now=timezone.now())
    unfinished = Phase.objects.filter(run_id=current.run_id, state__in=(PhaseState.PENDING, PhaseState.RUNNING))
    if current.state != PhaseState.SUCCEEDED or not unfinished.exists() or current.run.cancel_requested:
        run_settle(run_id=current.run_id)
    return current


CANCEL_POLL_S = 2.0  # how often a running phase looks for a cancel between lease renewals
WIND_DOWN_S = 180.0  # after a cancel, how long the lease is still renewed while the engines stop


class _Heartbeat(threading.Thread):
    """Renews the lease while the phase runs; on cancel or a lost lease, calls ``on_stop``.

    After a cancel the lease is still renewed while the phase winds down (its engines may take a
    few seconds to stop: a Spark driver's grace period, a Connect server's answer), for at most
    WIND_DOWN_S, so the cancelled outcome is written by this worker under its own lease.

    When renewals keep failing (the database is unreachable), the engine work is stopped before
    the lease can lapse (at 90 % of its life, by this process's clock, which set its expiry):
    past that point the reaper may hand the phase to another worker, and two attempts must
    never write side by side."""

    def __init__(self, phase: Phase, token: str, on_stop) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{phase.pk}")
        self.phase, self.token, self.on_stop = phase, token, on_stop
        self.halt = threading.Event()
        self.cancelled = self.lost = False
        self._wind_down_until = 0.0
        ttl = lease_ttl().total_seconds()
        left = (phase.lease_expires_at - timezone.now()).total_seconds() if phase.lease_expires_at else ttl
        self._renewed = time.monotonic() - (ttl - left)  # when the lease we hold was issued

    def _deadline(self) -> float:
        return self._renewed + lease_ttl().total_seconds() * LEASE_SAFETY

    def _cancel(self) -> None:
        """Stop the phase's engines on their own thread: some take seconds, and this one renews."""
        if not self.cancelled:
            self.cancelled = True
            self._wind_down_until = time.monotonic() + WIND_DOWN_S
            threading.Thread(target=self.on_stop, daemon=True, name=f"{self.name}-stop").start()

    def run(self) -> None:
        interval = max(0.2, lease_ttl().total_seconds() / 3)
        wait = min(interval, max(0.05, self._deadline() - time.monotonic()))
        try:
            while not self._wait_or_cancel(wait):
                if self.cancelled and time.monotonic() > self._wind_down_until:
                    log.error("the phase did not stop within %.0f s of its cancel: no longer renewing its lease",
                              WIND_DOWN_S, extra={"phase_id": self.phase.pk})
                    return
                sent = time.monotonic()
                try:
                    cancel = phase_heartbeat(phase_id=self.phase.pk, lease_token=self.token)
                    self._renewed = sent
                    if cancel:
                        self._cancel()
                except StaleLease:
                    self.lost = True
                    self.on_stop()
                    return
                except Exception:  # a database blip: keep trying while the lease may still hold
                    log.warning("heartbeat failed", exc_info=True, extra={"phase_id": self.phase.pk})
                    close_old_connections()
                    if time.monotonic() >= self._deadline():
                        log.error("lease about to lapse without a renewal: stopping the phase's work",
                                  extra={"phase_id": self.phase.pk})
                        self.lost = True
                        self.on_stop()
                        return
                wait = min(interval, max(0.05, self._deadline() - time.monotonic()))
        finally:
            connections.close_all()


    def _wait_or_cancel(self, wait: float) -> bool:
        """Wait ``wait`` seconds for the next renewal, looking every CANCEL_POLL_S whether the run
        was asked to cancel (one indexed read, no write): True when the heartbeat must end (halted,
        or cancelled: the phase is stopped at once, not at the next renewal)."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if self.halt.wait(min(left, CANCEL_POLL_S)):
                return True
            if not self.cancelled and deadline - time.monotonic() > 0 and self._cancel_asked():
                self._cancel()  # stopped at once; the renewals go on while it winds down
        return self.halt.is_set()

    def _cancel_asked(self) -> bool:
        try:
            return Run.objects.filter(pk=self.phase.run_id, cancel_requested=True).exists()
        except Exception:  # a database blip: the renewal will tell
            close_old_connections()
            return False


def phase_execute(*, phase_id: int, worker: str) -> Phase | None:
    """Claim and run one phase in this process. Returns None if another worker has it or the
    lease was lost; the outcome is written only under the live lease."""
    from runs.executors import PhaseContext, PhaseFailure, execute

    claim = phase_claim(phase_id=phase_id, worker=worker)
    if claim is None:
        return None
    phase, token = claim
    ctx = PhaseContext(phase=phase, lease_token=token)
    heartbeat = _Heartbeat(phase, token, on_stop=ctx.stop)
    event_append(run=phase.run, phase=phase, type=EventType.PHASE_STARTED,
                 message=f"{phase.name} started ({phase.kind})")
    heartbeat.start()
    outcome: dict[str, Any] = {"succeeded": True}
    try:
        output = execute(ctx)
        outcome["output"] = {**output, "artifacts": ctx.outputs} if ctx.outputs else output
    except StaleLease:
        outcome = {"lost": True}
    except PhaseFailure as exc:
        outcome = {"succeeded": False, "error": str(exc)}
    except Exception as exc:  # an executor bug: the detail goes to the log, the user gets one line
        log.exception("phase executor crashed", extra={"phase_id": phase_id, "run_id": phase.run_id})
        outcome = {"succeeded": False, "error": f"internal error in the {phase.kind} executor "
                                                f"({type(exc).__name__}); see the worker log"}
    finally:
        heartbeat.halt.set()
        heartbeat.join()
        ctx.cleanup()
    if heartbeat.cancelled:
        outcome = {"succeeded": False, "cancelled": True}
    if outcome.pop("lost", False) or heartbeat.lost:
        log.warning("lease lost while running phase", extra={"phase_id": phase_id, "run_id": phase.run_id})
        return None
    return _report(phase, token, outcome)


def _report(phase: Phase, token: str, outcome: dict[str, Any]) -> Phase | None:
    """Write the outcome, retrying database blips while the lease may still be ours: work that
    succeeded must not be recorded as failed because a connection dropped."""
    for attempt in range(REPORT_RETRIES):
        try:
            return phase_complete(phase=phase, lease_token=token, **outcome)
        except StaleLease:
            log.warning("lease lost before the outcome was written", extra={"phase_id": phase.pk})
            return None
        except DatabaseError:
            if attempt == REPORT_RETRIES - 1:
                raise
            log.warning("writing the outcome failed; retrying", exc_info=True, extra={"phase_id": phase.pk})
            close_old_connections()
            connections["default"].close()
            time.sleep(min(5.0, 0.2 * 2**attempt))
    return None


def phases_reap() -> list[int]:
    """Requeue (or fail) phases whose lease expired or that overran their timeout.

    Returns the ids of the runs touched."""
    now = timezone.now()
    touched: set[int] = set()
    for phase in Phase.objects.select_related("run").filter(state=PhaseState.RUNNING):
        expired = phase.lease_expires_at is not None and phase.lease_expires_at < now
        overran = phase.started_at and now > phase.started_at + timedelta(seconds=phase.timeout_s + TIMEOUT_GRACE_S)
        if not (expired or overran):
            continue
        with transaction.atomic():
            current = Phase.objects.select_for_update().select_related("run").filter(
                pk=phase.pk, state=PhaseState.RUNNING, lease_token=phase.lease_token
            ).first()
            if current is None:
                continue
            if expired:
                event_append(run=current.run, phase=current, type=EventType.PHASE_LEASE_EXPIRED, level="warning",
                             message=f"{current.name}: lease of {current.worker} expired")
                error, reason = "lease expired: the worker stopped answering", "lease_expired"
                count("controlroom_lease_expiries", kind=current.kind)
            else:
                error, reason = f"timed out after {current.timeout_s} s", "timeout"
            _end_attempt(current, outcome=PhaseState.FAILED, error=error, output=None, now=now, reason=reason)
            touched.add(current.run_id)
    for run_id in touched:
        run_settle(run_id=run_id)
    return sorted(touched)


def runs_stalled(*, quiet_s: int | None = None) -> list[int]:
    """Admitted runs with a claimable phase and no event for ``quiet_s``: their wake-up message
    was probably lost (a broker restart), so they need another."""
    quiet_s = settings.RUN_STALL_S if quiet_s is None else quiet_s
    now = timezone.now()
    candidates = set(
        Phase.objects.filter(state=PhaseState.PENDING, blocked=False, run__status=RunStatus.RUNNING,
                             run__cancel_requested=False)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .values_list("run_id", flat=True).distinct()[:1000]
    )
    if not candidates:
        return []
    recent = set(RunEvent.objects.filter(run_id__in=candidates, ts__gte=now - timedelta(seconds=quiet_s))
                 .values_list("run_id", flat=True).distinct())
    return sorted(candidates - recent)
