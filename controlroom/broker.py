"""The embedded Celery broker: a folder on disk that never shows a message half-written.

kombu's ``filesystem://`` transport writes a message under its final name and a consumer may
read it before the bytes land (``JSONDecodeError``, which kills the Celery worker); it also
rewrites exchange tables in place, and deletes a message the moment it is read, so a worker
killed mid-task loses its ``acks_late`` message. This transport (URL ``controlroom-fs://``,
folder from the ``broker_dir`` transport option, or ``controlroom-fs:///absolute/path``)
keeps one rule: every file appears under its final name only complete, by ``os.rename``.

Layout under the broker folder (all on one filesystem, so every rename is atomic)::

    tmp/                       files being written; invisible to consumers
    queues/<queue>/<ns>-<uuid>.msg   ready messages; a sorted listing is oldest first
    claimed/<owner>/<queue>/   taken by a consumer process, deleted on ack, renamed back on requeue
    claimed/<owner>/.lock      POSIX-locked for as long as the owning process lives
    exchanges/<name>.exchange  binding tables (fanout: Celery's remote control), replaced whole
    quarantine/                files that could not be used, kept for a human to read

A consumer reads a message only through ``broker_files``: a regular file (never a symlink, FIFO
or directory) of at most ``MAX_MESSAGE_BYTES``, holding a message of kombu's shape. Anything else
is quarantined, so no single file can stop or stall a worker. ``broker_claims`` keeps each
process's claimed/ folder and gives back the messages of owners that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
import urllib.parse
import uuid
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from controlroom.broker_claims import claims_for, restore_orphans
from controlroom.broker_files import MAX_MESSAGE_BYTES, UnreadableFile, message_problem, quarantine, read_regular_file

SCHEME = "controlroom-fs"
# How often a consumer looks for messages claimed by processes that died, and sweeps tmp/.
RESTORE_INTERVAL_S = 5.0
# A writer finishes a file in well under this; older files in tmp/ belong to a dead writer.
STALE_TMP_S = 3600.0
log = logging.getLogger(__name__)


def register() -> None:
    """Make ``controlroom-fs://`` resolve to this transport (before any connection is made)."""
    TRANSPORT_ALIASES[SCHEME] = "controlroom.broker:Transport"


def queue_dirname(queue: str) -> str:
    """A queue name as one safe file name (Celery's names keep their readable form)."""
    if not queue:
        raise ChannelError("A queue needs a name.")
    name = urllib.parse.quote(queue, safe="@")
    return name.replace(".", "%2E") if not name.strip(".") else name  # "." and ".." name directories


def _write_atomically(tmp_dir: Path, target: Path, data: bytes) -> None:
    """Write ``data`` to a fresh file in ``tmp_dir``, fsync it, then rename it to ``target``."""
    tmp = tmp_dir / f"{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # the name must never point at bytes still in flight
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def sweep_tmp(root: Path, older_than_s: float = STALE_TMP_S) -> None:
    """Remove files a writer that died left in tmp/ (never visible to anyone)."""
    limit = time.time() - older_than_s
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / "tmp"):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.unlink)(entry.path)


class Channel(filesystem.Channel):
    """One consumer's or producer's view of the broker folder."""

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self.root = broker_root(connection.client)
        for sub in ("tmp", "queues", "claimed", "exchanges"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._unacked: dict[str, Path] = {}  # delivery tag -> claimed file
        self._no_ack_queues: set[str] = set()
        self._pending: dict[str, deque[str]] = {}  # queue folder -> names listed, not yet tried
        self._known_dirs: set[Path] = set()
        self._next_restore = 0.0  # restore at the first poll, then every RESTORE_INTERVAL_S
        super().__init__(connection, **kwargs)

    # Messages

    def _queue_dir(self, queue: str) -> Path:
        return self.root / "queues" / queue_dirname(queue)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_dir(queue).mkdir(parents=True, exist_ok=True)

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:
        folder = self._queue_dir(queue)
        target = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex}.msg"
        data = dumps(payload).encode()
        if len(data) > MAX_MESSAGE_BYTES:  # every consumer would quarantine it unread
            raise ChannelError(f"A message of {len(data)} bytes is larger than the broker's limit "
                               f"of {MAX_MESSAGE_BYTES}.")
        try:
            if folder not in self._known_dirs:  # a queue nobody declared yet gets its folder here
                folder.mkdir(parents=True, exist_ok=True)
                self._known_dirs.add(folder)
            _write_atomically(self.root / "tmp", target, data)
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {target.parent}: {exc}") from exc

    def _candidates(self, folder: Path) -> deque[str]:
        # One listing serves many polls; a requeue drops it, so a message put back goes first.
        pending = self._pending.get(folder.name)
        if not pending:
            try:
                names = sorted(n for n in os.listdir(folder) if n.endswith(".msg"))
            except FileNotFoundError:
                names = []
            pending = self._pending[folder.name] = deque(names)
        return pending

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        now = time.monotonic()
        if now >= self._next_restore:
            self._next_restore = now + RESTORE_INTERVAL_S
            try:
                restore_orphans(self.root)
                sweep_tmp(self.root)
            except OSError as exc:  # housekeeping; the next round tries again, consuming goes on
                log.error("broker: cannot restore orphaned messages in %s: %s", self.root, exc)
        source = self._queue_dir(queue)
        candidates = self._candidates(source)
        while candidates:
            name = candidates.popleft()
            claimed = claims_for(self.root).queue_dir(source.name) / name
            try:
                os.rename(source / name, claimed)  # the one consumer whose rename succeeds owns it
            except FileNotFoundError:
                continue
            payload = self._decode(claimed)
            if payload is None:
                continue
            if queue in self._no_ack_queues:
                claimed.unlink()  # nobody will ack it: it is done the moment it is handed over
            else:
                self._unacked[payload["properties"]["delivery_tag"]] = claimed
            return payload
        raise Empty()

    def _decode(self, path: Path) -> dict[str, Any] | None:
        """The message in ``path``, or None after quarantining a file kombu must not see."""
        try:
            payload = loads(bytes_to_str(read_regular_file(path, limit=MAX_MESSAGE_BYTES)))
            problem = message_problem(payload)
            if problem is None:  # kombu's Message decodes the body inside Celery's event loop
                self.decode_body(payload["body"], payload["properties"]["body_encoding"])
        # Whatever a file makes the decoders raise (ValueError, TypeError, RecursionError on deep
        # nesting, a codec's own errors) is that file's fault: it must not end the worker.
        except Exception as exc:
            problem = str(exc) or type(exc).__name__
        if problem is not None:
            quarantine(self.root, path, problem)
            return None
        return payload

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> None:
        self._no_ack_queues.discard(self._tag_to_queue.get(consumer_tag))
        super().basic_cancel(consumer_tag)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        if not no_ack:
            return super().basic_get(queue, no_ack=False, **kwargs)
        self._no_ack_queues.add(queue)
        try:
            return super().basic_get(queue, no_ack=True, **kwargs)
        finally:
            self._no_ack_queues.discard(queue)

    def _forget(self, delivery_tag: str) -> None:
        if (path := self._unacked.pop(delivery_tag, None)) is not None:
            path.unlink(missing_ok=True)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        self._forget(delivery_tag)
        super().basic_ack(delivery_tag, multiple)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:  # with requeue, QoS calls _restore_at_beginning with the message
            self._forget(delivery_tag)
        super().basic_reject(delivery_tag, requeue=requeue)

    def _restore(self, message: Any) -> None:
        """Requeue (reject, or unacked at close): the claimed file goes back under its own name."""
        path = self._unacked.pop(message.delivery_tag, None)
        if path is None:
            super()._restore(message)
            return
        target = self.root / "queues" / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, target / path.name)
        self._pending.pop(target.name, None)

    def _purge(self, queue: str) -> int:
        count, folder = 0, self._queue_dir(queue)
        self._pending.pop(folder.name, None)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(folder):
                try:
                    (folder / name).unlink()
                    count += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:  # a directory: not a message, so not ours to delete
                    quarantine(self.root, folder / name, f"cannot be purged: {exc.strerror or exc}")
        return count

    def _size(self, queue: str) -> int:
        folder = self._queue_dir(queue)
        return sum(1 for n in os.listdir(folder) if n.endswith(".msg")) if folder.is_dir() else 0

    # Exchange tables: read without a lock (a table file is always complete), changed under one

    @property
    def control_folder(self) -> Path:
        return self.root / "exchanges"

    def get_table(self, exchange: str) -> list[filesystem.exchange_queue_t]:
        path = self._exchange_file(exchange)
        try:
            raw = read_regular_file(path, limit=MAX_MESSAGE_BYTES)
        except FileNotFoundError:
            return []
        except UnreadableFile as exc:
            quarantine(self.root, path, str(exc))
            return []
        try:
            return [filesystem.exchange_queue_t(*row) for row in loads(bytes_to_str(raw))]
        except (ValueError, TypeError, RecursionError) as exc:
            quarantine(self.root, path, str(exc) or type(exc).__name__)
            return []

    @contextlib.contextmanager
    def _table_lock(self, exchange: str) -> Any:
        with open(self.control_folder / f"{self._exchange_file(exchange).name}.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def _change_table(self, exchange: str, change: Any) -> None:
        try:
            with self._table_lock(exchange):
                table = self.get_table(exchange)
                changed = change(table)
                if changed is not None:
                    _write_atomically(self.root / "tmp", self._exchange_file(exchange), dumps(changed).encode())
        except OSError as exc:
            raise ChannelError(f"Cannot update the table of exchange {exchange!r}: {exc}") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._change_table(exchange, lambda table: None if row in table else [row, *table])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        self._purge(queue)
        row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._change_table(exchange, lambda table: [r for r in table if r != row] if row in table else None)


def broker_root(client: Any) -> Path:
    """The broker folder: the URL's path if it has one, else the ``broker_dir`` option."""
    path = (client.virtual_host or "").strip("/")
    if path:
        return Path("/" + path).resolve()
    configured = client.transport_options.get("broker_dir")
    if not configured:
        raise ChannelError(f"{SCHEME}:// needs a folder: the broker_dir transport option or "
                           f"{SCHEME}:///absolute/path")
    return Path(configured).resolve()


_states: dict[Path, virtual.BrokerState] = {}


class Transport(filesystem.Transport):
    """kombu transport for ``controlroom-fs://``; polling, like kombu's filesystem transport."""

    Channel = Channel
    driver_type = driver_name = SCHEME

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        # Declared exchanges and bindings, shared by the connections of this process to one
        # folder (kombu's transport shares one state for all folders, so a binding made for one
        # would be skipped, and never written, for the next).
        self.state = _states.setdefault(broker_root(client), virtual.BrokerState())

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"port": self.default_port}  # a folder has no host: no "reverting to localhost" warning
