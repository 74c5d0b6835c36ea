"""The blob-store seam: content-addressed bytes, staged then committed, read as a stream or by range.

Bytes arrive in two steps. ``stage`` (or a ``writer`` fed chunk by chunk) hashes and counts them
into a place of the store where nothing reads (nothing is visible yet); ``commit`` makes them
visible under their sha256, whole or not at all. Whatever is refused between the two (a wrong hash
or size, a lost lease, a body over the limit) is ``discard``-ed, so a refused upload leaves nothing.

Readers never see where a blob lives: ``open`` gives a stream, ``read_range`` some bytes, and
``open_random`` a seekable file object over ranged reads (what pyarrow needs to read a Parquet
footer and one row group without fetching the rest).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from controlroom.services import ServiceError

CHUNK = 1 << 20


log = logging.getLogger(__name__)


class BlobTooLarge(ValueError):
    """More bytes arrived than the limit allows; nothing was kept."""


class BlobStoreError(ServiceError):
    """The store cannot do its work (unreachable, refused credentials, missing bucket). The message
    is one sentence for the user; the log has the detail."""

    code = "unavailable"


class BlobHashMismatch(ServiceError):
    """The bytes that arrived do not hash to the sha256 declared before them; nothing was kept."""

    code = "hash_mismatch"


@dataclass
class StagedBlob:
    """Bytes hashed and counted into the store's staging area, not yet visible. ``token`` is the
    store's own handle on them (a temp file, a staging key, a pending upload): opaque to callers."""

    sha256: str
    size: int
    token: Any


class BlobWriter:
    """Incremental staging (an upload arriving in chunks): ``write`` then ``finish``, or ``abort``.
    Hashes, counts and enforces ``max_bytes`` here; a store's subclass keeps the bytes.

    ``sha256``, when the sender declares it before the bytes, lets a store write straight to the
    content's final place (S3: no server-side copy at commit); the bytes are still hashed as they
    pass, and ``finish`` refuses them (BlobHashMismatch, nothing kept) unless the hashes agree."""

    def __init__(self, max_bytes: int | None, sha256: str | None = None) -> None:
        self._digest = hashlib.sha256()
        self.size, self.max_bytes = 0, max_bytes
        self.expected = sha256

    def write(self, chunk: bytes) -> None:
        """Take the next bytes; over ``max_bytes`` everything is dropped and BlobTooLarge raised."""
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.abort()
            raise BlobTooLarge(f"more than {self.max_bytes} bytes")
        self._digest.update(chunk)
        try:
            self._keep(chunk)
        except Exception:
            self._failed()
            raise

    def finish(self) -> StagedBlob:
        """All bytes arrived: the staged blob, still invisible until the store commits it."""
        if self.expected is not None and self._digest.hexdigest() != self.expected:
            self.abort()
            raise BlobHashMismatch("The bytes received do not match the sha256 declared for them; "
                                   "nothing was kept.")
        try:
            kept = self._close()
        except Exception:
            self._failed()
            raise
        return StagedBlob(self._digest.hexdigest(), self.size, kept)

    def _failed(self) -> None:
        """Count a failure of the store itself (not a refused upload) for /metrics."""
        from controlroom.metrics import count

        try:
            count("controlroom_artifact_upload_failures", store=type(self).__name__.removesuffix("BlobWriter").lower())
        except Exception:  # the metric must never hide the failure being raised
            log.warning("an artifact upload failure could not be counted", exc_info=True)

    def abort(self) -> None:
        """Drop whatever was kept so far (idempotent)."""
        raise NotImplementedError

    def _keep(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> Any:
        raise NotImplementedError


@runtime_checkable
class BlobStore(Protocol):
    """Where artifacts, query results and exports live, addressed by sha256."""

    def writer(self, *, max_bytes: int | None = None, sha256: str | None = None) -> BlobWriter:
        """A writer that stages bytes as they arrive."""

    def stage(self, src: BinaryIO, *, max_bytes: int | None = None) -> StagedBlob:
        """Copy a stream into the staging area, hashing as the bytes pass."""

    def stage_file(self, source: Path) -> StagedBlob:
        """Stage a local file's bytes."""

    def commit(self, staged: StagedBlob) -> None:
        """Make staged bytes visible under their sha256 (equal bytes already there: drop the copy)."""

    def discard(self, staged: StagedBlob) -> None:
        """Drop staged bytes; a no-op once committed."""

    def open(self, sha256: str) -> BinaryIO:
        """A readable stream over a blob, front to back (FileNotFoundError if there is none)."""

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end of the blob)."""

    def open_random(self, sha256: str, size: int | None = None) -> BinaryIO:
        """A seekable file object whose reads are ranged reads of the blob."""

    def exists(self, sha256: str) -> bool:
        """Whether a blob with this hash is visible."""

    def size(self, sha256: str) -> int:
        """The blob's length in bytes (FileNotFoundError if there is none)."""

    def check(self) -> None:
        """Raise BlobStoreError unless the store is reachable with its credentials."""

    def delete_all(self) -> None:
        """Remove every blob and staged upload of this store (tests)."""


class StoreOps:
    """What every store builds from its primitives the same way."""

    def writer(self, *, max_bytes: int | None = None, sha256: str | None = None) -> BlobWriter:
        raise NotImplementedError

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        raise NotImplementedError

    def size(self, sha256: str) -> int:
        raise NotImplementedError

    def stage(self, src: BinaryIO, *, max_bytes: int | None = None) -> StagedBlob:
        """Copy a stream into the staging area, hashing as the bytes pass."""
        writer = self.writer(max_bytes=max_bytes)
        try:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def stage_file(self, source: Path) -> StagedBlob:
        """Stage a local file's bytes."""
        with source.open("rb") as src:
            return self.stage(src)

    def open_random(self, sha256: str, size: int | None = None) -> BinaryIO:
        """A seekable file object whose reads are ranged reads of the blob."""
        total = self.size(sha256) if size is None else size
        # Looked up per call (not bound once) so a wrapper on the store sees every read.
        return RangeFile(partial(self._range, sha256), total)  # type: ignore[return-value]

    def _range(self, sha256: str, start: int, length: int) -> bytes:
        return self.read_range(sha256, start, length)


class RangeFile(io.RawIOBase):
    """Read-only, seekable, unbuffered: each ``read`` is one ranged read of exactly what was asked
    (pyarrow asks for the footer, then whole column chunks), so nothing beyond it is fetched."""

    def __init__(self, read_range: Callable[[int, int], bytes], size: int) -> None:
        super().__init__()
        self._read_range, self._size, self._pos = read_range, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        want = self._size - self._pos if size is None or size < 0 else size
        want = max(0, min(want, self._size - self._pos))
        if not want:
            return b""
        data = self._read_range(self._pos, want)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @property
    def size(self) -> int:
        """The blob's length."""
        return self._size
