"""The standalone executor: claims phases over the HTTP contract and runs them here.

It needs no database: phases run through the same `sql` and `python` executors as in a
Celery worker, with a context whose logs, heartbeats, artifacts and outcome go over HTTP.
`sql` phases use DuckDB files in this machine's --warehouse directory.

    controlroom-executor --url https://cr.example.com --token crt_… --kinds sql,python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from runs.executors.base import StopHooks

log = logging.getLogger("controlroom.executor")
LEASE_SAFETY = 0.9  # share of a lease's life after which unrenewed engine work is stopped


class ContractError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('error', {}).get('message', body)}")
        self.status, self.body = status, body


class ContractClient:
    """JSON over HTTP with the bearer token; 204 answers None."""

    def __init__(self, url: str, token: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--url must be an http(s) URL, not {url!r}")
        self.base, self.token = url.rstrip("/") + "/api/v1/ops", token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, data: Any = None,
             content_type: str = "application/json", timeout: float = 60,
             headers: dict[str, str] | None = None) -> dict[str, Any] | None:
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.base}{path}", data=payload, method=method, headers={  # noqa: S310
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked)
                return None if response.status == 204 else json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}")
            except ValueError:
                detail = {}
            raise ContractError(exc.code, detail) from None

    def upload(self, phase_id: int, lease_token: str, fields: dict[str, Any], path: Path) -> dict[str, Any] | None:
        """A multipart upload streamed from disk; the lease token travels in a header, so the server
        checks it before it reads the body. The file's sha256 (``fields["sha256"]``) is declared in a
        header too, so the server's store can write the bytes straight to their place."""
        boundary = uuid.uuid4().hex
        head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = len(head) + path.stat().st_size + len(tail)

        def body() -> Any:
            yield head
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk
            yield tail

        headers = {"Content-Length": str(length), "X-Lease-Token": lease_token}
        if fields.get("sha256"):
            headers["X-Content-SHA256"] = str(fields["sha256"])
        return self.call("POST", f"/phases/{phase_id}/artifacts", data=body(),
                         content_type=f"multipart/form-data; boundary={boundary}", headers=headers)


class RemotePhaseContext(StopHooks):
    """The phase context of the standalone executor (``runs.executors.base`` protocol): every
    write goes over the contract."""

    def __init__(self, client: ContractClient, claim: dict[str, Any], warehouse: Path, datasets: Path) -> None:
        super().__init__(prefix=f"run{claim['run']['id']}-{claim['phase']['name']}-")
        self.client, self.claim = client, claim
        self.lease_token = claim["lease_token"]
        self.claimed_at = time.monotonic()
        self.phase = SimpleNamespace(**claim["phase"], pk=claim["phase"]["id"])
        self.run_id = claim["run"]["id"]
        self.parameters = {**claim["run"]["parameters"], "datasets_dir": "datasets://", "run_id": self.run_id}
        self.environment = claim["run"].get("environment") or "dev"
        if self.environment not in ("dev", "stage", "prod"):  # it becomes a folder name below
            raise ContractError(0, {"error": {"message": f"unknown environment {self.environment!r}"}})
        self.environment_name = self.environment
        self.warehouse, self.datasets = warehouse, datasets

    def log(self, message: str, *, level: str = "info", **payload: Any) -> None:
        self._event("PHASE_LOG", message, level, payload)

    def progress(self, message: str, **payload: Any) -> None:
        """A PHASE_PROGRESS event (how far the phase's engine got)."""
        self._event("PHASE_PROGRESS", message, "info", payload)

    def _event(self, kind: str, message: str, level: str, payload: dict[str, Any]) -> None:
        event = {"event_id": str(uuid.uuid4()), "phase_id": self.phase.pk, "type": kind,
                 "lease_token": self.lease_token, "level": level, "message": message, "payload": payload}
        self.client.call("POST", f"/runs/{self.run_id}/events", {"events": [event]})

    def duckdb(self, name: str):
        from runs.executors import PhaseFailure
        from sqlwarehouse.engines import DuckDBEngine

        # One database per environment, and this machine's datasets folder read-only, as on the
        # server. The name comes from a job spec: it must name a file in that folder, nothing else.
        folder = (self.warehouse / self.environment).resolve()
        database = (folder / f"{name}.duckdb").resolve()
        if not re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", name or "") or database.parent != folder:
            raise PhaseFailure(f"Connection {name!r} is not a connection name (letters, digits, - and _).")
        engine = DuckDBEngine(database=database, read_only=False, allowed_dirs=[self.scratch], datasets=self.datasets)
        self.on_stop(engine.interrupt)
        return engine

    def add_artifact(self, *, name: str, path: Path, media_type: str) -> dict[str, Any]:
        hasher = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        fields = {"name": name, "sha256": digest, "size": path.stat().st_size, "media_type": media_type}
        self.client.upload(self.phase.pk, self.lease_token, fields, path)
        record = {"name": name, "sha256": digest, "size": fields["size"], "media_type": media_type}
        self.outputs.append(record)
        self.log(f"artifact {name} uploaded ({record['size']} bytes, sha256 {digest[:12]})")
        return record


def _heartbeat(ctx: RemotePhaseContext, halt: threading.Event, state: dict[str, bool], interval: float) -> None:
    """Renew the lease; stop the engine on cancel, on a lost lease, and when renewals kept failing
    until the lease is about to lapse (then another executor may get the phase: two attempts
    must never write side by side). The lease's length comes from the server as a duration,
    so the two clocks need not agree."""
    ttl = float(ctx.claim.get("lease_ttl_s") or 30)
    renewed = tried = ctx.claimed_at
    interval = max(0.2, min(interval, ttl / 3))

    def wait() -> float:  # until the next renewal, the next cancel check, or the lease's safety margin
        now = time.monotonic()
        return max(0.05, min(tried + interval - now, CANCEL_POLL_S, renewed + ttl * LEASE_SAFETY - now))

    while not halt.wait(wait()):
        sent = time.monotonic()
        if sent < tried + interval and sent < renewed + ttl * LEASE_SAFETY:
            if _cancel_asked(ctx):  # between renewals: a read, no write
                state["cancelled"] = True
                ctx.stop()
                return
            continue
        tried = sent
        try:
            answer = ctx.client.call("POST", f"/phases/{ctx.phase.pk}/heartbeat", {"lease_token": ctx.lease_token})
            renewed = sent
        except ContractError as exc:
            if exc.status == 409:
                state["lost"] = True
                ctx.stop()
                return
            log.warning("heartbeat refused: %s", exc)
            answer = None
        except OSError as exc:  # the server is unreachable for now; the lease may still hold
            log.warning("heartbeat failed: %s", exc)
            answer = None
        if answer is None and time.monotonic() >= renewed + ttl * LEASE_SAFETY:
            log.error("the lease is about to lapse without a renewal: stopping phase %s", ctx.phase.name)
            state["lost"] = True
            ctx.stop()
            return
        if answer and answer.get("cancel_requested"):
            state["cancelled"] = True
            ctx.stop()
            return


CANCEL_POLL_S = 2.0  # between lease renewals, how often the run is read for a cancel


def _cancel_asked(ctx: RemotePhaseContext) -> bool:
    """Whether the run was asked to cancel (a GET; a failure here is not a lost lease)."""
    try:
        return bool(ctx.client.call("GET", f"/runs/{ctx.run_id}").get("cancel_requested"))
    except (ContractError, OSError) as exc:
        log.debug("cancel check failed: %s", exc)
        return False


def run_one(client: ContractClient, claim: dict[str, Any], warehouse: Path, datasets: Path,
            heartbeat_s: float = 5.0) -> str:
    """Execute one claimed phase and report its outcome; returns the outcome sent."""
    from runs.executors import PhaseFailure, execute

    ctx = RemotePhaseContext(client, claim, warehouse, datasets)
    halt, state = threading.Event(), {"cancelled": False, "lost": False}
    beat = threading.Thread(target=_heartbeat, args=(ctx, halt, state, heartbeat_s), daemon=True)
    beat.start()
    outcome, error, output = "succeeded", "", {}
    try:
        output = execute(ctx)
    except PhaseFailure as exc:
        outcome, error = "failed", str(exc)
    except Exception as exc:
        log.exception("phase %s crashed", ctx.phase.name)
        outcome, error = "failed", f"internal error in the {ctx.phase.kind} executor ({type(exc).__name__})"
    finally:
        halt.set()
        beat.join()
        ctx.cleanup()
    if state["lost"]:
        return "lost"
    if state["cancelled"]:
        outcome, error = "cancelled", ""
    if ctx.outputs:
        output = {**output, "artifacts": ctx.outputs}
    try:
        client.call("POST", f"/phases/{ctx.phase.pk}/complete",
                    {"lease_token": ctx.lease_token, "outcome": outcome, "error": error, "output": output})
    except ContractError as exc:
        if exc.status != 409:
            raise
        return "lost"
    return outcome


def serve(*, url: str, token: str, kinds: list[str], warehouse: Path, datasets: Path, name: str = "",
          until_idle: bool = False, wait: int = 20, heartbeat_s: float = 5.0) -> int:
    """Claim and run phases until stopped (or, with until_idle, until nothing is runnable)."""
    client = ContractClient(url, token)
    executor = name or f"executor@{socket.gethostname()}"
    done = 0
    while True:
        asked = time.monotonic()
        try:
            claim = client.call("POST", "/claim", {"executor": executor, "kinds": kinds,
                                                   "wait": 0 if until_idle else wait}, timeout=wait + 30)
        except (ContractError, OSError) as exc:
            log.warning("claim failed: %s; retrying", exc)
            time.sleep(2)
            continue
        if claim is None:
            if until_idle:
                return done
            if time.monotonic() - asked < wait / 2:
                # The server answered at once (its long polls are all taken): pause before asking again.
                time.sleep(random.uniform(1.0, 3.0))
            continue
        outcome = run_one(client, claim, warehouse, datasets, heartbeat_s=heartbeat_s)
        log.info("phase %s of run %s: %s", claim["phase"]["name"], claim["run"]["id"], outcome)
        done += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run Control Room phases on this machine over the HTTP contract.")
    parser.add_argument("--url", required=True, help="Control Room base URL")
    parser.add_argument("--token", required=True, help="an operator API token of the workspace")
    parser.add_argument("--kinds", default="sql,python", help="comma-separated phase kinds (default: sql,python)")
    parser.add_argument("--warehouse", default="./executor-warehouse", help="DuckDB files for sql phases")
    parser.add_argument("--datasets", default="./executor-datasets",
                        help="directory whose files SQL may read (read-only, as datasets://)")
    parser.add_argument("--name", default="", help="executor name shown on leases")
    parser.add_argument("--until-idle", action="store_true", help="exit when nothing is runnable")
    parser.add_argument("--heartbeat-s", type=float, default=5.0,
                        help="seconds between lease renewals (at most a third of the lease; a cancel is "
                             f"looked for every {CANCEL_POLL_S:.0f} s in between)")
    return parser


REMOTE_KINDS = ("sql", "python")  # what a RemotePhaseContext can run: no database, no table registry


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")
    import django

    django.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if other := sorted(set(kinds) - set(REMOTE_KINDS)):
        parser.error(f"this executor runs {' and '.join(REMOTE_KINDS)} phases, not {', '.join(other)}: lakehouse "
                     "kinds (iceberg, delta, check, trino, spark) write the table registry and run on Control "
                     "Room's Celery workers (spark phases on a worker started with --queues spark)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    warehouse = Path(args.warehouse).resolve()
    warehouse.mkdir(parents=True, exist_ok=True)
    datasets = Path(args.datasets).resolve()
    datasets.mkdir(parents=True, exist_ok=True)
    count = serve(url=args.url, token=args.token, kinds=kinds,
                  warehouse=warehouse, datasets=datasets, name=args.name, until_idle=args.until_idle,
                  heartbeat_s=args.heartbeat_s)
    log.info("ran %d phase(s)", count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
