"""The embedded broker (controlroom/broker.py) against the ways kombu's filesystem transport broke.

kombu's transport let a consumer read a message its writer had not finished (the worker died of
``JSONDecodeError``), lost a message its consumer died holding, and rewrote exchange tables in
place. Here: the same interleavings, many writer and consumer processes on one queue, SIGKILL
between claim and ack, a corrupt file, concurrent binds, and a real Celery worker round trip.
And files that are no message at all (wrong shape, a directory, a FIFO, a symlink, too large),
which a consumer quarantines without raising, blocking or reading them whole.
"""

from __future__ import annotations

import contextlib
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
from kombu import Connection, Queue
from kombu.exceptions import ChannelError
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


def kombu_payload(channel, body: object) -> dict:
    """A message as kombu's virtual transport hands it to ``_put``."""
    payload = channel.prepare_message(json.dumps(body), content_type="application/json", content_encoding="utf-8")
    channel._inplace_augment_message(payload, "", "q")
    return payload


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
    producer_channel._put("q", kombu_payload(producer_channel, body))
    monkeypatch.undo()
    assert polls == ["empty", []]
    got = consumer_channel._get("q")
    assert json.loads(consumer_channel.decode_body(got["body"], got["properties"]["body_encoding"])) == body


@pytest.mark.slow
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


@pytest.mark.slow
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


BAD = "00000000000000000000-bad.msg"  # sorts before every real message: taken first


def plant_properties_a_string(path: Path, good: dict) -> None:
    path.write_text(json.dumps({"properties": "delivery_tag", "body": "x"}))


def plant_no_body(path: Path, good: dict) -> None:
    path.write_text(json.dumps({"properties": {"delivery_tag": "t1"}}))  # Celery: len(None)


def plant_changed(*keys: str, value: object):
    """A real message with one field (``keys``: its path) set to ``value``."""
    def plant(path: Path, good: dict) -> None:
        bad = json.loads(json.dumps(good))
        target = bad
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        path.write_text(json.dumps(bad))
    plant.__name__ = f"{'.'.join(keys)}={value!r}"
    return plant


def plant_deeply_nested(path: Path, good: dict) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError, not ValueError


def plant_directory(path: Path, good: dict) -> None:
    path.mkdir()


def plant_symlink(path: Path, good: dict) -> None:
    outside = path.parents[3] / "outside.json"  # a valid message, but not in the queue
    outside.write_text(json.dumps(good))
    path.symlink_to(outside)


@pytest.mark.parametrize("plant", [
    plant_properties_a_string, plant_no_body, plant_changed("body", value=5), plant_changed("headers", value=[]),
    plant_changed("content-type", value=None), plant_changed("properties", "delivery_tag", value=7),
    plant_changed("properties", "delivery_info", value="x"),
    plant_changed("properties", "body_encoding", value="rot13"),
    plant_changed("body", value="abc"),  # not base64: kombu's Message would raise inside Celery's loop
    plant_deeply_nested, plant_directory, plant_symlink,
], ids=lambda plant: plant.__name__)
def test_a_file_that_is_no_kombu_message_is_quarantined_and_never_raises(tmp_path, caplog, plant):
    broker_dir = tmp_path / "b"
    with connect("ours", broker_dir) as conn:
        queue = conn.SimpleQueue("q")
        queue.put({"n": 1})
        [good] = messages_in(broker_dir / "queues")
        plant(broker_dir / "queues" / "q" / BAD, json.loads(good.read_text()))
        with caplog.at_level(logging.ERROR, logger="controlroom.broker"):
            got = queue.get(timeout=1)
        got.ack()
        assert got.payload == {"n": 1}
        assert [p.name for p in (broker_dir / "quarantine").iterdir()] == [f"q--{BAD}"]
        assert [r.levelname for r in caplog.records] == ["ERROR"] and "could not be decoded" in caplog.text
        assert messages_in(broker_dir / "queues") == messages_in(broker_dir / "claimed") == []
    if plant is plant_symlink:
        assert (tmp_path / "outside.json").is_file()  # the link was moved, not what it points at


def test_a_celery_style_consumer_skips_every_bad_file_and_gets_the_good_messages(tmp_path):
    """basic_consume + drain_events, as Celery's worker consumes: the path that ended the worker."""
    broker_dir = tmp_path / "b"
    with connect("ours", broker_dir) as writer:
        writer.SimpleQueue("q").put({"n": 1})
    [good] = messages_in(broker_dir / "queues")
    template = json.loads(good.read_text())
    for n, plant in enumerate([plant_properties_a_string, plant_no_body, plant_directory, plant_symlink,
                               plant_changed("body", value="abc"), plant_deeply_nested]):
        plant(broker_dir / "queues" / "q" / f"{n:020d}-bad.msg", template)
    got = []
    with connect("ours", broker_dir) as conn, \
            conn.Consumer(Queue("q"), callbacks=[lambda body, m: (got.append(body), m.ack())]):
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
    assert got == [{"n": 1}]
    assert len(list((broker_dir / "quarantine").iterdir())) == 6


def test_a_fifo_in_the_queue_is_quarantined_without_blocking_the_consumer(tmp_path):
    """Reading a FIFO waits for a writer that never comes: the consumer must not even open it so."""
    with connect("ours", tmp_path) as conn:
        conn.SimpleQueue("q").put(message(1, 1, 100))
    os.mkfifo(tmp_path / "queues" / "q" / BAD)
    out, stop = tmp_path / "consumed.txt", tmp_path / "stop"
    consumer = clients("consume", tmp_path, "--queue", "q", "--out", str(out), "--stop", str(stop))
    try:
        wait_for(lambda: out.exists() and out.read_text() == "1:1:ok\n", "the message after the FIFO", timeout=15)
        stop.touch()
        assert consumer.wait(WAIT_S) == 0, consumer.stderr.read().decode()[-2000:]
    finally:
        consumer.kill()
        consumer.wait()
    assert [p.name for p in (tmp_path / "quarantine").iterdir()] == [f"q--{BAD}"]
    assert b"not a regular file" in consumer.stderr.read()


def test_a_file_over_the_size_limit_is_quarantined_unread_and_never_written(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(broker, "MAX_MESSAGE_BYTES", 4096, raising=False)
    with connect("ours", tmp_path) as conn:
        queue = conn.SimpleQueue("q")
        queue.put({"n": 1})
        [good] = messages_in(tmp_path / "queues")
        large = json.loads(good.read_text())
        large["body"] = kombu_payload(conn.default_channel, {"pad": "x" * 8192})["body"]  # valid, but too big
        (tmp_path / "queues" / "q" / BAD).write_text(json.dumps(large))
        with caplog.at_level(logging.ERROR, logger="controlroom.broker"):
            got = queue.get(timeout=1)
        got.ack()
        assert got.payload == {"n": 1}
        assert [p.name for p in (tmp_path / "quarantine").iterdir()] == [f"q--{BAD}"]
        assert "more than the limit of 4096" in caplog.text
        with pytest.raises(ChannelError, match="larger than the broker's limit"):
            queue.put({"pad": "x" * 8192})  # refused at the writer, not left for a consumer to quarantine
        assert messages_in(tmp_path / "queues") == []


def test_an_exchange_table_that_is_a_symlink_is_quarantined_not_followed(tmp_path):
    with connect("ours", tmp_path / "b") as conn:
        channel = conn.default_channel
        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps([["", "", "elsewhere"]]))
        (tmp_path / "b" / "exchanges" / "fan.exchange").symlink_to(outside)
        assert channel.get_table("fan") == []
        (tmp_path / "b" / "exchanges" / "fan.exchange").mkdir()  # bad again: the first one is kept too
        assert channel.get_table("fan") == []
        assert sorted(p.name[:24] for p in (tmp_path / "b" / "quarantine").iterdir()) == [
            "exchanges--fan.exchange", "exchanges--fan.exchange."]
    assert outside.is_file()


def test_claims_of_a_dead_consumer_whose_pid_is_now_ours_are_restored(tmp_path):
    """A pid is reused: the worker restarted after a crash may get the dead one's. The lock decides."""
    with connect("ours", tmp_path) as conn:
        queue = conn.SimpleQueue("q")
        queue.put(message(7, 1, 100))
        queue.put(message(7, 2, 100))
        mine = queue.get(timeout=5)  # held, unacked, in this process's own claims folder
        claimed = tmp_path / "claimed.txt"
        hanging = clients("claim", tmp_path, "--queue", "q", "--out", str(claimed))
        try:
            wait_for(claimed.exists, "the consumer to claim the message")
        finally:
            hanging.send_signal(signal.SIGKILL)
            hanging.wait()
        [dead] = (tmp_path / "claimed").glob(f"{hanging.pid}-*")
        dead.rename(dead.with_name(f"{os.getpid()}-{dead.name.split('-', 1)[1]}"))  # as if its pid were ours

        assert broker.restore_orphans(tmp_path) == 1  # the dead one's message; ours stays claimed
        again = queue.get(timeout=5)
        assert (again.payload["writer"], again.payload["seq"]) == (7, 2)
        assert [p.parent.parent.name for p in messages_in(tmp_path / "claimed")] == [
            broker.claims_for(tmp_path.resolve()).name] * 2
        for got in (mine, again):
            got.ack()
    assert messages_in(tmp_path) == []


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_quarantines_bad_files_and_runs_the_demo_job(world, demo_job, tmp_path, settings):
    """The reproductions that crash-looped the worker ("Unrecoverable error", the file restored to
    the queue by the next worker, which died of it too), a FIFO that hung it, and files too large."""
    from runs.models import RunStatus
    from runs.services.runs import run_create
    from tests.workers import WorkerPool, celery_broker, worker_env

    queue = tmp_path / "broker" / "queues" / "default"
    queue.mkdir(parents=True)
    (queue / "00000000000000000000-bad1.msg").write_text('{"properties": "delivery_tag", "body": "x"}')
    (queue / "00000000000000000001-no-body.msg").write_text('{"properties": {"delivery_tag": "t1"}}')
    (queue / "00000000000000000002-dir.msg").mkdir()
    os.mkfifo(queue / "00000000000000000003-fifo.msg")
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as out:
        out.truncate(300 * 1024 * 1024)  # sparse: large to stat, nothing on disk; over the 64 MiB limit
    (queue / "00000000000000000004-link.msg").symlink_to(huge)
    os.link(huge, queue / "00000000000000000005-huge.msg")
    bad = sorted(p.name for p in queue.iterdir())

    url = f"{broker.SCHEME}://{tmp_path / 'broker'}"
    env = worker_env(broker_url=url, data_dir=tmp_path / "worker-data",
                     CONTROLROOM_DATASETS_DIR=str(settings.DATASETS_DIR))
    pool = WorkerPool(env=env, log_dir=tmp_path)
    try:
        worker = pool.start().wait_ready()
        with celery_broker(url):
            run = run_create(access=world.access("operator"), job=demo_job)
            deadline = time.monotonic() + 120
            while not run.is_terminal and time.monotonic() < deadline and worker.alive():
                time.sleep(0.3)
                run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, f"{run.status}: {run.error}\n{pool.logs()}"
        assert worker.alive() and "Unrecoverable" not in worker.log_text()
    finally:
        pool.close()
    assert sorted(p.name for p in (tmp_path / "broker" / "quarantine").iterdir()) == [f"default--{n}" for n in bad]
    assert worker.log_text().count("could not be decoded") == len(bad)
    assert not list((tmp_path / "broker" / "queues").rglob("*.msg"))
