"""Broker client processes for tests/test_broker.py: writers, consumers, a consumer that hangs.

``python -m tests.broker_clients MODE --kind {ours,kombu} --folder DIR [...]`` talks to the
embedded broker (``controlroom-fs://DIR``) or to kombu's ``filesystem://`` transport in DIR, so
the same load can be pointed at either. Messages carry a random pad and its sha256, so a
consumer can tell an intact message from a torn one. Consumers write one line per message
(``writer:seq:ok`` or ``...:torn``) and ``CRASH <error>`` if the transport raised.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path
from queue import Empty

from kombu import Connection, Exchange, Queue

from controlroom import broker

POLL_S = 0.01


def connect(kind: str, folder: Path) -> Connection:
    """A connection to the broker folder, with our transport or kombu's filesystem one."""
    if kind == "ours":
        broker.register()
        return Connection(f"{broker.SCHEME}://{folder.resolve()}", transport_options={"polling_interval": POLL_S})
    for sub in ("queue", "control", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return Connection("filesystem://", transport_options={
        "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"), "processed_folder": str(folder / "processed"),
        "polling_interval": POLL_S,
    })


def message(writer: int, seq: int, max_pad: int) -> dict[str, object]:
    pad = os.urandom(random.randint(0, max_pad) // 2).hex()
    return {"writer": writer, "seq": seq, "pad": pad, "sha": hashlib.sha256(pad.encode()).hexdigest()}


def intact(body: dict[str, object]) -> bool:
    return hashlib.sha256(str(body.get("pad", "")).encode()).hexdigest() == body.get("sha")


def write(conn: Connection, args: argparse.Namespace) -> None:
    queue = conn.SimpleQueue(args.queue)
    for seq in range(args.count):
        queue.put(message(args.writer, seq, args.max_pad), serializer="json")
    queue.close()


def consume(conn: Connection, args: argparse.Namespace) -> None:
    queue = conn.SimpleQueue(args.queue)
    with open(args.out, "a") as out:
        while True:
            try:
                got = queue.get(timeout=0.2)
            except Empty:
                if Path(args.stop).exists():
                    return
                continue
            except Exception as exc:  # the transport failed: what killed Celery workers
                out.write(f"CRASH {exc!r}\n")
                out.flush()
                raise
            body = got.payload
            out.write(f"{body['writer']}:{body['seq']}:{'ok' if intact(body) else 'torn'}\n")
            out.flush()
            got.ack()


def claim_and_hang(conn: Connection, args: argparse.Namespace) -> None:
    """Take one message, report it, never ack it: the test kills this process with SIGKILL."""
    got = conn.SimpleQueue(args.queue).get(timeout=30)
    report = Path(f"{args.out}.tmp")
    report.write_text(f"{got.payload['writer']}:{got.payload['seq']}\n")
    report.rename(args.out)  # the test reads it the moment it exists
    while True:
        time.sleep(1)


def bind(conn: Connection, args: argparse.Namespace) -> None:
    """Bind ``count`` queues to one fanout exchange, publishing to it between binds."""
    exchange = Exchange(args.queue, type="fanout")
    channel = conn.channel()
    while args.go and not Path(args.go).exists():  # all binders start together: the first bind races
        time.sleep(0.001)
    for seq in range(args.count):
        Queue(f"{args.queue}-{args.writer}-{seq}", exchange=exchange)(channel).declare()
        conn.Producer(channel).publish({"writer": args.writer, "seq": seq}, exchange=exchange, serializer="json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("write", "consume", "claim", "bind"))
    parser.add_argument("--kind", choices=("ours", "kombu"), default="ours")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--queue", default="hammer")
    parser.add_argument("--writer", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--max-pad", type=int, default=65536)
    parser.add_argument("--out", default="")
    parser.add_argument("--stop", default="")
    parser.add_argument("--go", default="")
    args = parser.parse_args(argv)
    handler = {"write": write, "consume": consume, "claim": claim_and_hang, "bind": bind}[args.mode]
    with connect(args.kind, args.folder) as conn:
        handler(conn, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
