"""Reading the embedded broker's files without trusting them (see controlroom/broker.py).

Anything can end up in a queue folder: a hand-written file, a directory, a FIFO, a symlink to a
huge file, JSON of another shape. A consumer must never block on such a file, read it without
bound, or hand it to kombu (whose ``Message`` and Celery's consumer raise out of the worker's
event loop on a wrong shape); it moves the file to ``quarantine/`` and goes on.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from pathlib import Path
from typing import Any

# Celery's messages are a few kB; a file this large is not one of ours and is not read.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer that never comes.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
log = logging.getLogger("controlroom.broker")


class UnreadableFile(Exception):
    """A broker file that is not a regular file within the size limit, or cannot be read."""


def read_regular_file(path: Path, *, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a symlink) of at most ``limit`` bytes.

    Raises ``FileNotFoundError`` if there is nothing at ``path``, else ``UnreadableFile``."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink; ENXIO: a socket; EACCES, ...
        raise UnreadableFile(f"cannot open it: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"not a regular file (mode {stat.filemode(info.st_mode)})")
        if info.st_size > limit:
            raise UnreadableFile(f"{info.st_size} bytes, more than the limit of {limit}")
        chunks, size = [], 0
        while chunk := os.read(fd, min(_READ_CHUNK, limit + 1 - size)):  # limit + 1: a file still growing
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UnreadableFile(f"more than the limit of {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(f"cannot read it: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def message_problem(payload: Any) -> str | None:
    """What makes ``payload`` unlike a message of kombu's virtual transport, or None.

    kombu's ``prepare_message`` and ``basic_publish`` build ``{"body": str, "content-type": str,
    "content-encoding": str, "headers": {}, "properties": {"delivery_tag": str, "body_encoding":
    str, "delivery_info": {}, "priority": int, ...}}``; kombu's ``Message`` and Celery index into
    exactly these, so each must have its type before either sees the message."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "properties is not an object"
    expected: list[tuple[str, Any, type]] = [
        ("body", payload.get("body"), str),
        ("content-type", payload.get("content-type"), str),
        ("content-encoding", payload.get("content-encoding"), str),
        ("headers", payload.get("headers"), dict),
        ("properties.delivery_tag", properties.get("delivery_tag"), str),
        ("properties.body_encoding", properties.get("body_encoding"), str),
        ("properties.delivery_info", properties.get("delivery_info", {}), dict),
        ("properties.priority", properties.get("priority", 0), int),
    ]
    for name, value, kind in expected:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{name} is {type(value).__name__}, not {kind.__name__}"
    return None


def quarantine(root: Path, path: Path, reason: str) -> Path:
    """Move a file the broker cannot use out of the way and say so at error level.

    Never raises: a file that cannot even be moved is left where it is (a claimed one goes back
    to its queue only when this process is gone) and the error line says so."""
    folder = root / "quarantine"
    target = folder / f"{path.parent.name}--{path.name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):  # an earlier file of the same name (an exchange table) is kept too
            target = folder / f"{target.name}.{uuid.uuid4().hex[:8]}"
        os.rename(path, target)
    except FileNotFoundError:
        log.error("broker: %s could not be decoded (%s) and is gone", path, reason)
        return path
    except OSError as exc:
        log.error("broker: %s could not be decoded (%s), nor moved to %s: %s", path, reason, folder, exc)
        return path
    log.error("broker: %s could not be decoded (%s); moved to %s", path.name, reason, target)
    return target
