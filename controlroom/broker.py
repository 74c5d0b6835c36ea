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
    quarantine/                files that could not be decoded, kept for a human to read
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


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN/EACCES: another process holds it
        return False
    return True


class Claims:
    """This process's ``claimed/<owner>/`` folder, locked for the process's whole life.

    A POSIX record lock (``lockf``) is released by the kernel when its process dies, however it
    dies, and is not inherited by forked children (Celery's pool), so "the lock is free" means
    exactly "the owner is gone". The folder is built in tmp/ and renamed into claimed/ with its
    lock already held, so no restorer ever sees it unlocked while its owner lives."""

    def __init__(self, root: Path) -> None:
        self.pid = os.getpid()
        self.name = f"{self.pid}-{uuid.uuid4().hex[:12]}"
        building = root / "tmp" / f"claims-{self.name}"
        building.mkdir(parents=True)
        self._lock_fd = os.open(building / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not _try_lock(self._lock_fd):
            raise ChannelError(f"Cannot lock {building / '.lock'}")
        self.dir = root / "claimed" / self.name
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(building, self.dir)
        self._queues: set[str] = set()

    def queue_dir(self, dirname: str) -> Path:
        path = self.dir / dirname
        if dirname not in self._queues:
            path.mkdir(exist_ok=True)
            self._queues.add(dirname)
        return path


_claims: dict[Path, Claims] = {}


def claims_for(root: Path) -> Claims:
    """The claims folder of this process under ``root`` (a forked child gets its own)."""
    claims = _claims.get(root)
    if claims is None or claims.pid != os.getpid():
        claims = _claims[root] = Claims(root)
    return claims


def restore_orphans(root: Path) -> int:
    """Put back every message claimed by a process that no longer exists; returns how many.

    The restorer takes the dead owner's lock first, so two restorers never work on one folder;
    a folder without a lock file is one a restorer emptied and did not finish removing."""
    restored, claimed, ours = 0, root / "claimed", f"{os.getpid()}-"
    try:
        owners = [entry for entry in os.scandir(claimed) if entry.is_dir()]
    except FileNotFoundError:
        return 0
    for owner in owners:
        if owner.name.startswith(ours):
            continue  # our own lock would look free to us: POSIX locks never conflict in one process
        folder = Path(owner.path)
        try:
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None and not _try_lock(fd):
                continue  # its process is alive
            restored += _restore_folder(root, folder)
            with contextlib.suppress(FileNotFoundError):
                (folder / ".lock").unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        finally:
            if fd is not None:
                os.close(fd)
    return restored


def _restore_folder(root: Path, folder: Path) -> int:
    restored = 0
    try:
        queues = [entry for entry in os.scandir(folder) if entry.is_dir()]
    except FileNotFoundError:
        return 0
    for queue in queues:
        target = root / "queues" / queue.name
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            for message in os.scandir(queue.path):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(message.path, target / message.name)  # keeps its name: back at its old place
                    restored += 1
        with contextlib.suppress(OSError):
            os.rmdir(queue.path)
    if restored:
        log.warning("broker: restored %d unacknowledged message(s) of dead consumer %s", restored, folder.name)
    return restored


def sweep_tmp(root: Path, older_than_s: float = STALE_TMP_S) -> None:
    """Remove files a writer that died left in tmp/ (never visible to anyone)."""
    limit = time.time() - older_than_s
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / "tmp"):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.unlink)(entry.path)


def quarantine(root: Path, path: Path, reason: str) -> Path:
    """Move an undecodable file out of the way and say so at error level."""
    folder = root / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.parent.name}--{path.name}"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, target)
    log.error("broker: %s could not be decoded (%s); moved to %s", path.name, reason, target)
    return target


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
        try:
            if folder not in self._known_dirs:  # a queue nobody declared yet gets its folder here
                folder.mkdir(parents=True, exist_ok=True)
                self._known_dirs.add(folder)
            _write_atomically(self.root / "tmp", target, dumps(payload).encode())
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
            restore_orphans(self.root)
            sweep_tmp(self.root)
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
        try:
            payload = loads(bytes_to_str(path.read_bytes()))
            if not isinstance(payload, dict) or "delivery_tag" not in payload.get("properties", {}):
                raise ValueError("not a kombu message")
        except (ValueError, TypeError, AttributeError) as exc:
            quarantine(self.root, path, str(exc) or type(exc).__name__)
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
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
                    count += 1
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
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return [filesystem.exchange_queue_t(*row) for row in loads(bytes_to_str(raw))]
        except (ValueError, TypeError) as exc:
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
