"""Who holds which message of the embedded broker, and giving back those of dead consumers.

A consumer takes a message by renaming it into its own ``claimed/<owner>/<queue>/`` folder
(see controlroom/broker.py); this module keeps that folder and its lock, and puts the messages
of an owner that died back into their queues.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from pathlib import Path

from kombu.exceptions import ChannelError

from controlroom.broker_files import quarantine

log = logging.getLogger("controlroom.broker")


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

    Whether the owner is gone is the lock's answer, never the pid in the folder's name (a new
    process may get a dead one's pid). The restorer takes the dead owner's lock first, so two
    restorers never work on one folder; a folder without a lock file is one a restorer emptied
    and did not finish removing."""
    restored, claimed = 0, root / "claimed"
    # Our own lock would look free to us (POSIX locks never conflict within one process), and
    # opening and closing its file would drop it: skip exactly our own folders.
    ours = {claims.name for claims in _claims.values() if claims.pid == os.getpid()}
    try:
        owners = [entry for entry in os.scandir(claimed) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for owner in owners:
        if owner.name in ours:
            continue
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
        queues = [entry for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for queue in queues:
        target = root / "queues" / queue.name
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            for message in os.scandir(queue.path):
                try:
                    os.rename(message.path, target / message.name)  # keeps its name: back at its old place
                    restored += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:  # the queue holds a directory of that name: rename cannot replace it
                    quarantine(root, Path(message.path), f"cannot be put back: {exc.strerror or exc}")
        with contextlib.suppress(OSError):
            os.rmdir(queue.path)
    if restored:
        log.warning("broker: restored %d unacknowledged message(s) of dead consumer %s", restored, folder.name)
    return restored
