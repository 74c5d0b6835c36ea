"""Interactive runs in the web process: the editor's Run answers with the first rows in the same
request, instead of queueing the execution for a worker and asking again for its result.

Where the fixed cost went (benchmarks/sql_interactive.py): the Celery message and a worker's
claim, the status request's long poll, a second request for the panel, and writing the Parquet
file before any row could be shown. An inline run takes none of them: the request thread starts
the execution on a thread of its own and waits up to INLINE_WAIT_S for its first page, which
``store_stream`` hands over before the rows are written. The panel then shows those rows and
asks once for the stored result, which replaces them when the file is in the store.

The row stays the truth, as with a worker: the thread claims the execution (QUEUED to RUNNING)
through ``query_execute``, its watch saves progress, a cancel reaches it the same way, and the
reaper fails it if this process dies mid-run. At most ``settings.SQL_INLINE_RUNS`` run at once
per process; past that (or with 0) the execution is queued for a worker as before, and so is an
execution whose thread ended without claiming it. The threads stay for the next run and keep
their database connection (opening one cost more than the rest of the set-up) until idle for
IDLE_CLOSE_S.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections

from sqlwarehouse.execution import query_execute
from sqlwarehouse.models import QueryExecution

log = logging.getLogger(__name__)
INLINE_WAIT_S = 2.0  # how long Run waits for the first page before answering with a link to poll
ANSWER_WAIT_S = 0.2  # how long the thread waits, with the first page, for the request to answer
_lock = threading.Lock()
_running = 0


@dataclass
class FirstPage:
    columns: list[dict[str, str]]
    rows: list[list[Any]]


class InlineRun:
    """One execution run on a thread of this web process (see the module's docstring)."""

    def __init__(self) -> None:
        self.execution_id: int | None = None
        self.first_page: FirstPage | None = None
        self.finished = False
        self._submitted: QueryExecution | None = None
        self._ready = threading.Event()
        self._answered = threading.Event()
        self._answered.set()  # unless start(answers=True)
        self._released = False

    def start(self, execution: QueryExecution, *, answers: bool = False) -> None:
        """Run the (queued) execution on a thread; the slot is released when it ends. The thread
        works on a copy of ``execution`` (the request goes on with its own). ``answers``: the
        request answers with the first page, and calls ``answered`` once it has (see _publish)."""
        self.execution_id, self._submitted = execution.pk, copy.copy(execution)
        if answers:
            self._answered.clear()
        _dispatch(self)

    def answered(self) -> None:
        """The request has its answer: the thread may go on storing the result."""
        self._answered.set()

    def release(self) -> None:
        """Give the slot back without running anything (the submission was refused)."""
        global _running
        with _lock:
            if not self._released:
                self._released, _running = True, _running - 1

    def wait(self, timeout_s: float | None = None) -> bool:
        """True when the first page or the end came within ``timeout_s`` (INLINE_WAIT_S)."""
        return self._ready.wait(INLINE_WAIT_S if timeout_s is None else timeout_s)

    def _publish(self, columns: list[dict[str, str]], rows: list[list[Any]]) -> None:
        self.first_page = FirstPage(columns, rows)
        self._ready.set()
        # Storing the result competes with the request for the interpreter while it renders these
        # rows: it waits (briefly) for the answer to be sent, which then came ~3 ms sooner.
        self._answered.wait(ANSWER_WAIT_S)

    def _run(self) -> None:
        try:
            close_old_connections()  # this thread's connection from an earlier run: too old or broken?
            query_execute(execution_id=self.execution_id, on_first_page=self._publish, submitted=self._submitted)
        except Exception:  # query_execute records the engine's failures; this is the database itself
            log.exception("inline SQL execution crashed", extra={"execution_id": self.execution_id})
        finally:
            try:
                _queue_if_unclaimed(self.execution_id)
            finally:
                self.finished = True
                self._ready.set()
                self.release()
                close_old_connections()  # kept for the next run unless too old or broken


# Threads that ran an inline execution wait for the next one: at most as many as ran at once.
IDLE_CLOSE_S = 2.0  # an idle thread closes its database connection after this long
_tasks: queue.SimpleQueue[InlineRun | None] = queue.SimpleQueue()
_idle = 0
_threads: set[threading.Thread] = set()


def _dispatch(run: InlineRun) -> None:
    """Hand ``run`` to an idle thread (reserved here, so each task has its own), else a new one."""
    global _idle
    with _lock:
        spawn = _idle == 0
        if not spawn:
            _idle -= 1
    if spawn:
        thread = threading.Thread(target=_worker, args=(run,), name="sql-inline", daemon=True)
        _threads.add(thread)
        thread.start()
    else:
        _tasks.put(run)


def _worker(run: InlineRun | None) -> None:
    global _idle
    while run is not None:
        run._run()
        with _lock:
            _idle += 1
        try:
            run = _tasks.get(timeout=IDLE_CLOSE_S)
        except queue.Empty:
            connections.close_all()
            run = _tasks.get()
    connections.close_all()  # a stop request (None): inline_stop_idle
    _threads.discard(threading.current_thread())


def inline_stop_idle(timeout_s: float = 5.0) -> None:
    """End the idle threads and wait for them, so no database connection stays open (the tests'
    clean-up: a test database cannot be dropped while a connection to it is open)."""
    global _idle
    with _lock:
        count, _idle = _idle, 0
        remaining = len(_threads) - count
    for _ in range(count):
        _tasks.put(None)
    deadline = time.monotonic() + timeout_s
    while len(_threads) > remaining and time.monotonic() < deadline:
        time.sleep(0.01)


def _queue_if_unclaimed(execution_id: int | None) -> None:
    """An execution the thread never claimed (the database was away a moment) goes to a worker."""
    if QueryExecution.objects.filter(pk=execution_id, status=QueryExecution.Status.QUEUED).exists():
        from sqlwarehouse.tasks import query_execute as task

        log.warning("inline SQL execution not claimed; queued for a worker", extra={"execution_id": execution_id})
        task.apply_async((execution_id,), queue="sql")


def inline_reserve() -> InlineRun | None:
    """A slot for an inline run, or None when SQL_INLINE_RUNS are already running here (or it is 0)."""
    global _running
    with _lock:
        if _running >= settings.SQL_INLINE_RUNS:
            return None
        _running += 1
    return InlineRun()
