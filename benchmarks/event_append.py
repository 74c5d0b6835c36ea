"""Event append throughput on PostgreSQL: batches of executor events (PHASE_LOG, each with the
live lease token of one claimed phase) through events_append_batch, against plain psycopg
INSERTs of the same rows (one executemany per batch, one transaction) into runs_runevent, the
two interleaved batch by batch in the same run. Prints events/s for both and the ratio.

    .venv/bin/python benchmarks/event_append.py [--batches 100] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import _common  # sets up sys.path and the environment; must come first

INSERT = ("INSERT INTO runs_runevent (run_id, phase_id, seq, event_id, type, level, message, payload, ts) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, now())")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    with _common.servers() as env:
        report(args, env["DATABASE_URL"])


def report(args: argparse.Namespace, database_url: str) -> None:
    import psycopg
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.models import Phase, Run, RunEvent
    from runs.services.events import events_append_batch
    from runs.services.leases import phase_claim_next

    workspace, job, _ = _common.world()
    svc_run_id, bare_run_id = _common.queue_phases(workspace, job, runs=2, per_run=1)
    phase, token = phase_claim_next(workspace=workspace, worker="bench", kinds=["python"], run_id=svc_run_id)
    run = Run.objects.get(pk=svc_run_id)
    bare_phase_id = Phase.objects.get(run_id=bare_run_id).pk

    def batch(i: int) -> list[dict]:
        return [{"type": "PHASE_LOG", "event_id": str(uuid.uuid4()), "phase_id": phase.pk, "lease_token": token,
                 "level": "info", "message": f"batch {i} line {j}: rows read so far {i * 1000 + j}",
                 "payload": {"batch": i, "line": j}} for j in range(args.batch_size)]

    svc_s = bare_s = 0.0
    seq = 0
    with psycopg.connect(database_url) as bare:
        for i in range(args.batches + 1):  # batch 0 warms both paths and is not counted
            events = batch(i)
            start = time.perf_counter()
            if i == 0:  # count the queries of the warm-up batch only (capturing costs time)
                with CaptureQueriesContext(connection) as queries:
                    result = events_append_batch(run=run, events=events)
            else:
                result = events_append_batch(run=run, events=events)
            took = time.perf_counter() - start
            assert result["appended"] == len(events), result
            rows = [(bare_run_id, bare_phase_id, seq + 1 + k, uuid.uuid4(), e["type"],
                     e["level"], e["message"], json.dumps(e["payload"])) for k, e in enumerate(events)]
            seq += len(rows)
            start = time.perf_counter()
            with bare.transaction(), bare.cursor() as cur:
                cur.executemany(INSERT, rows)
            bare_took = time.perf_counter() - start
            if i:
                svc_s, bare_s = svc_s + took, bare_s + bare_took
            _common.say(f"batch {i}/{args.batches}")
    _common.say("")

    n = args.batches * args.batch_size
    seqs = list(RunEvent.objects.filter(run_id=svc_run_id, type="PHASE_LOG").order_by("seq")
                .values_list("seq", flat=True))
    contiguous = seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) == n + args.batch_size
    svc_rate, bare_rate = n / svc_s, n / bare_s
    print(f"event append on PostgreSQL: {args.batches} batches of {args.batch_size} events for one claimed phase, "
          f"{os.cpu_count()} CPUs")
    print(f"  bare psycopg executemany INSERT {bare_rate:9.0f} events/s  ({1000 * bare_s / args.batches:.1f} ms/batch)")
    print(f"  events_append_batch             {svc_rate:9.0f} events/s  ({1000 * svc_s / args.batches:.1f} ms/batch)")
    print(f"  ratio (service / bare)          {svc_rate / bare_rate:9.2f}")
    print(f"  queries per batch               {len(queries):9d}   ({len(queries) / args.batch_size:.1f} per event)")
    print(f"  seq numbers contiguous, no gaps {'yes' if contiguous else 'NO':>9}")


if __name__ == "__main__":
    main()
