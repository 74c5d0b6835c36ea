"""PostgreSQL's one-statement paths for the two hottest contract calls.

A claim (pick with SKIP LOCKED, take the lease, number and write the PHASE_CLAIMED event) and a
successful completion (end the attempt under the live lease, number and write PHASE_SUCCEEDED)
are each ONE statement in autocommit: data-modifying CTEs, so no lock is held while Python runs
and a claim costs one round trip. The ORM paths in ``leases`` and ``phases`` do the same on
SQLite (and for the rarer outcomes); the test suite runs both.

What must see other transactions' commits (unblocking dependents, "is the run finished?") is read
in the same statement when its snapshot is provably current (see _SUCCEED), and otherwise by a
second statement after the first has committed: within one statement every part reads the same
snapshot, so two phases finishing together could each miss the other.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection

from runs.models import EventType, Phase, PhaseState, Run, RunEvent, RunStatus

_P, _R, _E = Phase._meta.db_table, Run._meta.db_table, RunEvent._meta.db_table
_FIELDS = Phase._meta.concrete_fields
_COLUMNS = ", ".join(f"took.{f.column}" for f in _FIELDS)
_ATTNAMES = [f.attname for f in _FIELDS]
_CONVERTERS = [getattr(f, "from_db_value", None) for f in _FIELDS]
_NEVER = 2**62  # an automatic-prepare threshold no statement reaches
_EVENT_COLUMNS = "run_id, phase_id, seq, event_id, type, level, message, payload, ts"

# The event of a claim, written in the same statement: PHASE_CLAIMED with the run's next seq.
_CLAIM = f"""
WITH cand AS (
  -- Walks the claimable phases in id order (as the bare SKIP LOCKED loop does) and looks each
  -- candidate's run up by primary key. The run check is a LATERAL subquery behind OFFSET 0 so
  -- that no plan can start from the runs instead: with statistics from before a burst was
  -- admitted, a join was planned as "every running run's phases, sorted" (17 ms per claim).
  -- {{run_lock}} is FOR UPDATE SKIP LOCKED first: a run whose row another claim or completion
  -- holds (for its event seq) is skipped, so concurrent claims spread over runs instead of
  -- queueing on one run row; empty when that found nothing.
  SELECT p.id FROM {_P} p CROSS JOIN LATERAL (
    SELECT 1 FROM {_R} r WHERE r.id = p.run_id AND r.workspace_id = %(workspace)s
      AND r.status = '{RunStatus.RUNNING}' AND NOT r.cancel_requested OFFSET 0 {{run_lock}}) r
  WHERE p.state = '{PhaseState.PENDING}' AND NOT p.blocked AND {{kind_filter}}
    AND (p.not_before IS NULL OR p.not_before <= %(now)s) {{run_filter}}
  ORDER BY p.id LIMIT 1 FOR UPDATE OF p SKIP LOCKED
), took AS (
  UPDATE {_P} p SET state = '{PhaseState.RUNNING}', attempt = p.attempt + 1, lease_token = %(token)s,
    worker = %(worker)s, lease_expires_at = %(expires)s, heartbeat_at = %(now)s, started_at = %(now)s,
    finished_at = NULL, error = ''
  FROM cand WHERE p.id = cand.id AND p.state = '{PhaseState.PENDING}'
  RETURNING p.*
), seq AS (
  UPDATE {_R} r SET last_seq = r.last_seq + 1 WHERE r.id = (SELECT run_id FROM took)  -- by primary key
  RETURNING r.id, r.last_seq
), ev AS (
  INSERT INTO {_E} ({_EVENT_COLUMNS})
  SELECT took.run_id, took.id, seq.last_seq, %(event_id)s, '{EventType.PHASE_CLAIMED}', 'info',
    format('%%s claimed by %%s (attempt %%s/%%s)', took.name, %(worker)s::text, took.attempt, took.max_attempts),
    jsonb_build_object('attempt', took.attempt, 'worker', %(worker)s::text,
                       'lease_expires_at', %(expires_iso)s::text),
    %(now)s
  FROM took JOIN seq ON seq.id = took.run_id
)
SELECT {_COLUMNS},
  EXISTS (SELECT 1 FROM {_R} q WHERE q.workspace_id = %(workspace)s AND q.status = '{RunStatus.QUEUED}')
FROM (SELECT 1) one LEFT JOIN took ON true
"""

# The dependents that are ready once phase %(name)s of run %(run)s has succeeded (used twice).
# (The caller's phase row supplies run and name; the lease check on its id makes them agree.)
_READY = f"""
  UPDATE {_P} d SET blocked = false
  WHERE d.run_id = %(run)s AND d.blocked AND d.depends_on ? %(name)s::text
    AND NOT EXISTS (
      SELECT 1 FROM jsonb_array_elements_text(d.depends_on) dep(name)
      WHERE dep.name <> %(name)s::text AND NOT EXISTS (
        SELECT 1 FROM {_P} s WHERE s.run_id = d.run_id AND s.name = dep.name AND s.state = '{PhaseState.SUCCEEDED}'))
  RETURNING d.id"""

# A success in one statement. Every part reads the statement's snapshot, taken before the run's
# row lock (the seq UPDATE) was granted. Every phase state change bumps last_seq under that lock,
# so "fresh" (the snapshot's last_seq is the one just before ours) proves no other change landed
# in between, and the unblocking and the "phases still to end" answer are exact. When it is not
# fresh, the caller runs _AFTER_SUCCESS, whose new snapshot sees every commit before ours.
_SUCCEED = f"""
WITH took AS (
  UPDATE {_P} p SET state = '{PhaseState.SUCCEEDED}', output = %(output)s::jsonb, error = '', finished_at = %(now)s,
    lease_token = '', lease_expires_at = NULL
  WHERE p.id = %(phase)s AND p.lease_token = %(token)s AND p.state = '{PhaseState.RUNNING}'
    AND p.lease_expires_at > %(now)s  -- an expired lease is dead before the reaper sees it
    -- A run asked to cancel records no success: the run row is locked first (so a cancel that
    -- is mid-commit is waited for and seen), and the ORM path records the attempt as cancelled.
    AND NOT (SELECT r.cancel_requested FROM {_R} r WHERE r.id = %(run)s FOR UPDATE)
  RETURNING p.*
), seq AS (
  UPDATE {_R} r SET last_seq = r.last_seq + 1 WHERE r.id = %(run)s AND EXISTS (SELECT 1 FROM took)
  RETURNING r.id, r.last_seq, r.cancel_requested
), snap AS (
  SELECT last_seq FROM {_R} WHERE id = %(run)s
), ev AS (
  INSERT INTO {_E} ({_EVENT_COLUMNS})
  SELECT took.run_id, took.id, seq.last_seq, %(event_id)s, '{EventType.PHASE_SUCCEEDED}', 'info',
    format('%%s succeeded in %%s s', took.name,
           to_char(extract(epoch FROM %(now)s - took.started_at), 'FM9999999990.00')),
    jsonb_build_object('attempt', took.attempt,
                       'duration_s', extract(epoch FROM %(now)s - took.started_at)::float8),
    %(now)s
  FROM took JOIN seq ON seq.id = took.run_id
), ready AS ({_READY.replace("d.blocked AND", "d.blocked AND EXISTS (SELECT 1 FROM took) AND")}
)
SELECT {_COLUMNS}, seq.cancel_requested, seq.last_seq = snap.last_seq + 1,
  EXISTS (SELECT 1 FROM {_P} u WHERE u.run_id = %(run)s AND u.id <> %(phase)s
          AND u.state IN ('{PhaseState.PENDING}', '{PhaseState.RUNNING}'))
FROM took JOIN seq ON seq.id = took.run_id CROSS JOIN snap
"""

# The follow-up when another change landed between the snapshot and the lock: a new statement,
# so a new snapshot that sees it.
_AFTER_SUCCESS = f"""
WITH ready AS ({_READY})
SELECT EXISTS (SELECT 1 FROM {_P} u WHERE u.run_id = %(run)s
               AND u.state IN ('{PhaseState.PENDING}', '{PhaseState.RUNNING}'))
"""


def _execute(sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """One statement on Django's own connection (so inside its transaction, if any), as a
    server-side prepared statement: planning these CTEs costs more than running them (0.5-0.9 ms
    each, measured). Django turns psycopg's automatic preparing off for the connection
    (prepare_threshold None, for transaction-mode poolers), which also makes ``prepare=True`` a
    no-op; a threshold no statement reaches gives back explicit preparing and nothing else, as
    Django's own cursors bind client-side and never prepare. PG_PREPARE_CLAIMS=0 turns it off."""
    connection.ensure_connection()
    raw = connection.connection
    prepare = settings.PG_PREPARE_CLAIMS
    if prepare and raw.prepare_threshold is None:
        raw.prepare_threshold = _NEVER
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=prepare)
        return cursor.fetchone()


def _phase(row: tuple[Any, ...]) -> Phase:
    values = [conv(value, None, connection) if conv else value for conv, value in zip(_CONVERTERS, row, strict=False)]
    return Phase.from_db(connection.alias, _ATTNAMES, values)


def claim_next(
    *, workspace_id: int, worker: str, kinds: list[str], run_id: int | None, now: dt.datetime, ttl: dt.timedelta
) -> tuple[tuple[Phase, str] | None, bool]:
    """The oldest claimable phase, taken and its PHASE_CLAIMED event written, in one statement.
    Returns (phase and lease token, or None; whether the workspace has queued runs)."""
    token, expires = uuid.uuid4().hex, now + ttl
    params = {
        "kinds": kinds, "kind": kinds[0], "now": now, "workspace": workspace_id, "run": run_id, "token": token,
        "worker": worker[:200], "expires": expires, "expires_iso": expires.isoformat(), "event_id": uuid.uuid4(),
    }
    for run_lock in (True, False):
        row = _execute(claim_sql(kinds=len(kinds), one_run=run_id is not None, run_lock=run_lock), params)
        assert row is not None
        if row[0] is not None:
            return (_phase(row), token), row[-1]
    return None, row[-1]


def claim_sql(*, kinds: int, one_run: bool, run_lock: bool = True) -> str:
    """The claim statement for this many kinds, optionally limited to one run (%(run)s)."""
    # One kind (the usual case) keeps the index's id order; several need ANY and a sort.
    kind_filter = "p.kind = %(kind)s::text" if kinds == 1 else "p.kind = ANY(%(kinds)s::text[])"
    sql = _CLAIM.replace("{run_filter}", "AND p.run_id = %(run)s" if one_run else "")
    sql = sql.replace("{run_lock}", "FOR UPDATE SKIP LOCKED" if run_lock else "")
    return sql.replace("{kind_filter}", kind_filter)


def complete_succeeded(
    *, phase_id: int, run_id: int, name: str, lease_token: str, output: dict[str, Any], now: dt.datetime
) -> tuple[Phase, bool, bool] | None:
    """End the attempt as succeeded under the live lease. Returns (phase, the run has phases
    still to end, the run was asked to cancel), or None when the token is not the live one or
    the run was asked to cancel (the caller's ORM path then tells the two apart)."""
    row = _execute(_SUCCEED, {"output": json.dumps(output), "now": now, "phase": phase_id, "run": run_id,
                              "name": name, "token": lease_token, "event_id": uuid.uuid4()})
    if row is None:
        return None
    phase, (cancel_requested, fresh, unfinished) = _phase(row), row[-3:]
    if not fresh:
        after = _execute(_AFTER_SUCCESS, {"run": run_id, "name": phase.name})
        assert after is not None
        unfinished = after[0]
    return phase, unfinished, cancel_requested
