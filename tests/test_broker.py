"""The embedded broker (controlroom/broker.py) against the ways kombu's filesystem transport broke.

kombu's transport let a consumer read a message its writer had not finished (the worker died of
``JSONDecodeError``), lost a message its consumer died holding, and rewrote exchange tables in
place. Here: the same interleavings, many writer and consumer processes on one queue, SIGKILL
between claim and ack, a corrupt file, concurrent binds, and a real Celery worker round trip.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from controlroom import broker
from tests.broker_clients import connect, message
from tests.conftest import REPO

WAIT_S = 60.0


def clients(mode: str, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.broker_clients", mode, "--folder", str(folder), *args],
                            cwd=REPO, stderr=subprocess.PIPE)


def wait_for(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def messages_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.msg"))


def test_kombu_filesystem_hands_out_a_message_its_writer_is_still_writing(tmp_path, monkeypatch):
    """The bug: kombu's ``_put`` creates the final ``*.msg`` name, then locks and writes; its
    ``_get`` takes no lock. A consumer polling in between gets an empty file."""
    writer, reader = connect("kombu", tmp_path), connect("kombu", tmp_path)
    producer_channel, consumer_channel = writer.channel(), reader.channel()
    real_lock, seen = filesystem.lock, {}

    def lock_then_poll(file, flags):
        if flags == filesystem.LOCK_EX and "error" not in seen:  # the writer holds the empty file
            try:
                consumer_channel._get("q")
            except Exception as exc:  # the failure is the finding
                seen["error"] = exc
        real_lock(file, flags)

    monkeypatch.setattr(filesystem, "lock", lock_then_poll)
    producer_channel._put("q", message(1, 1, 100))
    assert isinstance(seen.get("error"), json.JSONDecodeError), seen
    with pytest.raises(Empty):
        consumer_channel._get("q")  # and the message itself is gone: the consumer moved it away


def test_a_message_being_written_is_invisible_until_complete(tmp_path, monkeypatch):
    """Ours writes into tmp/, fsyncs, then renames: a poll mid-write finds nothing."""
    writer, reader = connect("ours", tmp_path), connect("ours", tmp_path)
    producer_channel, consumer_channel = writer.channel(), reader.channel()
    real_fsync, polls = os.fsync, []

    def poll_then_fsync(fd):
        try:
            consumer_channel._get("q")
            polls.append("got a message")
        except Empty:
            polls.append("empty")
        polls.append(sorted(p.name for p in (tmp_path / "queues").rglob("*.msg")))
        real_fsync(fd)

    monkeypatch.setattr(broker.os, "fsync", poll_then_fsync)
    body = message(1, 1, 100)
    producer_channel._put("q", {"body": body, "properties": {"delivery_tag": "t1"}})
    monkeypatch.undo()
    assert polls == ["empty", []]
    assert consumer_channel._get("q")["body"] == body


def test_many_writers_and_consumers_deliver_every_message_exactly_once_intact(tmp_path):
    writers, consumers, count = 3, 3, 200
    outs = [tmp_path / f"consumer-{n}.txt" for n in range(consumers)]
    stop = tmp_path / "stop"
    readers = [clients("consume", tmp_path / "b", "--out", str(out), "--stop", str(stop)) for out in outs]
    senders = [clients("write", tmp_path / "b", "--writer", str(w), "--count", str(count)) for w in range(writers)]
    try:
        for sender in senders:
            assert sender.wait(WAIT_S) == 0, sender.stderr.read().decode()[-2000:]

        def lines() -> list[str]:
            return [line for out in outs if out.exists() for line in out.read_text().splitlines()]

        wait_for(lambda: len(lines()) >= writers * count or any(r.poll() is not None for r in readers),
                 "every message to be consumed")
        stop.touch()
        for reader in readers:
            assert reader.wait(WAIT_S) == 0, reader.stderr.read().decode()[-2000:]
    finally:
        for proc in [*readers, *senders]:
            proc.kill()
            proc.wait()
    delivered = Counter(lines())
    assert not [line for line in delivered if not line.endswith(":ok")], "a consumer saw a torn message or crashed"
    assert delivered == Counter(f"{w}:{s}:ok" for w in range(writers) for s in range(count))
    assert sum(1 for out in outs if out.stat().st_size) > 1, "one consumer took everything: no contention tested"
    assert messages_in(tmp_path / "b") == []  # every one acked: nothing left queued or claimed


def test_a_message_claimed_by_a_consumer_killed_before_ack_is_delivered_again(tmp_path):
    with connect("ours", tmp_path) as conn:
        conn.SimpleQueue("q").put(message(7, 1, 100))
        claimed = tmp_path / "claimed.txt"
        hanging = clients("claim", tmp_path, "--queue", "q", "--out", str(claimed))
        try:
            wait_for(claimed.exists, "the consumer to claim the message")
            assert claimed.read_text() == "7:1\n"
            assert not list((tmp_path / "queues").rglob("*.msg"))  # taken off the queue, not copied
            queue = conn.SimpleQueue("q")
            with pytest.raises(Empty):
                queue.get(timeout=0.3)  # while its owner lives, nobody else gets it
        finally:
            hanging.send_signal(signal.SIGKILL)
            hanging.wait()
        broker.restore_orphans(tmp_path)  # what every consumer does at start and every few seconds
        again = queue.get(timeout=5)
        assert (again.payload["writer"], again.payload["seq"]) == (7, 1)
        again.ack()
    assert messages_in(tmp_path) == []
    assert list((tmp_path / "claimed").iterdir()) == [p for p in (tmp_path / "claimed").iterdir()
                                                      if p.name.startswith(f"{os.getpid()}-")]


def test_requeue_puts_the_message_back_and_ack_deletes_it(tmp_path):
    with connect("ours", tmp_path) as conn:
        channel = conn.channel()
        queue = conn.SimpleQueue("q", channel=channel)
        queue.put({"n": 1})
        queue.put({"n": 2})
        first = queue.get(timeout=1)
        first.requeue()
        assert [queue.get(timeout=1).payload for _ in range(2)] == [{"n": 1}, {"n": 2}]  # back in its place
        channel.close()  # two unacked: closing the channel restores them, as a warm shutdown does
        again = conn.SimpleQueue("q", channel=conn.channel())
        got = [again.get(timeout=1) for _ in range(2)]
        for m in got:
            m.ack()
        assert [m.payload for m in got] == [{"n": 1}, {"n": 2}]
        assert messages_in(tmp_path) == []


def test_a_corrupt_file_is_quarantined_and_consumption_continues(tmp_path, caplog):
    with connect("ours", tmp_path) as conn:
        queue = conn.SimpleQueue("q")
        (tmp_path / "queues" / "q" / "00000000000000000001-corrupt.msg").write_bytes(b'{"body": "tru')
        (tmp_path / "queues" / "q" / "00000000000000000002-empty.msg").write_bytes(b"")
        queue.put({"n": 1})
        with caplog.at_level(logging.ERROR, logger="controlroom.broker"):
            got = queue.get(timeout=1)
        got.ack()
        assert got.payload == {"n": 1}
        assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [
            "q--00000000000000000001-corrupt.msg", "q--00000000000000000002-empty.msg"]
        assert [r.levelname for r in caplog.records].count("ERROR") == 2
        assert "could not be decoded" in caplog.text


def test_concurrent_binds_to_one_fanout_exchange_lose_none_and_never_tear_the_table(tmp_path):
    binders, count, go = 4, 25, tmp_path / "go"
    procs = [clients("bind", tmp_path / "b", "--queue", "fan", "--writer", str(b), "--count", str(count),
                     "--go", str(go)) for b in range(binders)]
    time.sleep(1.0)  # let every binder get ready and wait for the go
    go.touch()
    for proc in procs:
        assert proc.wait(WAIT_S) == 0, proc.stderr.read().decode()[-2000:]
    table = json.loads((tmp_path / "b" / "exchanges" / "fan.exchange").read_text())
    assert sorted(row[2] for row in table) == sorted(f"fan-{b}-{s}" for b in range(binders) for s in range(count))
    assert not (tmp_path / "b" / "quarantine").exists()


def test_a_queue_name_never_escapes_the_broker_folder():
    assert broker.queue_dirname("worker@host.celery.pidbox") == "worker@host.celery.pidbox"
    assert broker.queue_dirname("..") == "%2E%2E"
    assert "/" not in broker.queue_dirname("../../etc")


def test_the_embedded_default_broker_lives_in_the_data_dir(settings):
    from controlroom.celery import app

    assert settings.CELERY_BROKER_URL == "controlroom-fs://"
    with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        assert isinstance(conn.transport, broker.Transport)
        assert broker.broker_root(conn) == Path(settings.DATA_DIR).resolve() / "broker"
    assert app.connection_for_write().transport_cls == "controlroom-fs"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_runs_the_demo_job_through_the_embedded_broker(world, demo_job, tmp_path, settings):
    from runs.models import RunStatus
    from runs.services.runs import run_create
    from tests.workers import WorkerPool, celery_broker, worker_env

    url = f"{broker.SCHEME}://{tmp_path / 'broker'}"
    env = worker_env(broker_url=url, data_dir=tmp_path / "worker-data",
                     CONTROLROOM_DATASETS_DIR=str(settings.DATASETS_DIR))  # where the fixture put orders.csv
    pool = WorkerPool(env=env, log_dir=tmp_path)
    try:
        worker = pool.start().wait_ready()
        with celery_broker(url):
            run = run_create(access=world.access("operator"), job=demo_job)  # on commit: a message to the folder
            deadline = time.monotonic() + 120
            while not run.is_terminal and time.monotonic() < deadline and worker.alive():
                time.sleep(0.3)
                run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, f"{run.status}: {run.error}\n{pool.logs()}"
        assert "runs.tasks.phase_execute" in worker.log_text() and "Unrecoverable" not in worker.log_text()
    finally:
        pool.close()
    assert worker.log_text().count(" succeeded in ") >= run.phases.count()
    assert not list((tmp_path / "broker" / "queues").rglob("*.msg"))  # every wake-up consumed
