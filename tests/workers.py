"""Real Celery worker processes for tests: start, kill -9, pause, resume, stop.

A :class:`Worker` runs ``celery -A controlroom worker`` in its own session (its pool children
share the process group), against the test database (:func:`database_url`) and a Redis broker.
``with celery_broker(url): ...`` points this process's Celery app at the same broker, so
``task.delay()`` from a test reaches the workers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

from controlroom.celery import app as celery_app

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_numbers = itertools.count(1)


def database_url() -> str:
    """The test database as a DATABASE_URL for a child process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[str]:
    """Send this process's Celery messages to ``url`` while the block runs."""
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    celery_app._after_fork()  # drop pooled connections so the new broker URL takes effect
    try:
        yield url
    finally:
        celery_app.conf.broker_url = old
        celery_app._after_fork()


@contextlib.contextmanager
def private_broker(redis_url: str, db: int) -> Iterator[str]:
    """Database ``db`` of the shared Redis as this process's broker, empty before and after (stray
    messages stay out of other tests)."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    try:
        with celery_broker(url):
            yield url
    finally:
        redis.Redis.from_url(url).flushdb()


def worker_env(*, broker_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker that shares this test's database, storage and broker."""
    return {
        **os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": broker_url,
        "ARTIFACT_STORE_URL": settings.ARTIFACT_STORE_URL, "CONTROLROOM_WAREHOUSE_DIR": str(settings.WAREHOUSE_DIR),
        "CONTROLROOM_DATASETS_DIR": str(settings.DATASETS_DIR),
        "CONTROLROOM_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra,
    }


class Worker:
    """One ``celery worker`` process group; ``pgid`` is the main process's pid."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, concurrency: int = 2, name: str = "w",
                 queues: str = "default") -> None:
        self.env, self.concurrency, self.queues = env, concurrency, queues
        self.name = f"{name}{next(_numbers)}"
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "controlroom", "worker", "--loglevel", "INFO",
                 "--concurrency", str(self.concurrency), "--queues", self.queues,
                 "--hostname", f"{self.name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"],
                cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pgid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid  # start_new_session: the main process leads its own group

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return f"--- {self.log_path.name} ---\n{self.log_text()[-chars:]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Worker:
        """Wait until the worker consumes (its log says 'ready.')."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_text():
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited early\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} not ready after {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def pids(self) -> set[int]:
        """Pids of the processes in the worker's group (main process and pool children)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if int(fields[2]) == self.pgid and fields[0] != "Z":  # pgrp; zombies are gone already
                found.add(int(entry.name))
        return found

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown code runs, no message is acked."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process), then SIGKILL whatever is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()  # a paused group cannot shut down
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class WorkerPool:
    """Starts workers with one environment and always stops every one of them."""

    def __init__(self, *, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.workers: list[Worker] = []

    def start(self, concurrency: int = 2, name: str = "w", queues: str = "default") -> Worker:
        worker = Worker(env=self.env, log_dir=self.log_dir, concurrency=concurrency, name=name, queues=queues)
        self.workers.append(worker)
        return worker.start()

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(w.log_tail(chars) for w in self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()  # tests are over: nothing to finish, and no lock may outlive them
