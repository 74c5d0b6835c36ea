"""Artifact storage backends. Local disk now (file:// URLs); S3 joins later.

Blobs live at <root>/sha256/<aa>/<bb>/<hash>. Bytes arrive in two steps: ``stage`` copies them
into a temp file under <root>/tmp while hashing and counting (nothing is visible yet), and
``commit`` renames the staged file into place, which readers see whole or not at all. Whatever
is refused between the two (a wrong hash or size, a lost lease, a body over the limit) is
``discard``-ed, so a refused upload leaves no file behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_CHUNK = 1 << 20


class BlobTooLarge(ValueError):
    """More bytes arrived than the limit allows; nothing was kept."""


@dataclass
class StagedBlob:
    """Bytes hashed and counted into a temp file of the store, not yet visible."""

    sha256: str
    size: int
    path: Path


class BlobWriter:
    """Incremental staging (an upload arriving in chunks): ``write`` then ``finish``, or ``abort``."""

    def __init__(self, tmp_dir: Path, max_bytes: int | None) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False)
        self._digest = hashlib.sha256()
        self.size, self.max_bytes = 0, max_bytes

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.abort()
            raise BlobTooLarge(f"more than {self.max_bytes} bytes")
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> StagedBlob:
        self._file.close()
        return StagedBlob(self._digest.hexdigest(), self.size, Path(self._file.name))

    def abort(self) -> None:
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        """A writer that stages bytes as they arrive."""
        return BlobWriter(self.root / "tmp", max_bytes)

    def stage(self, src: BinaryIO) -> StagedBlob:
        """Copy a stream into a staged temp file, hashing as the bytes pass."""
        writer = self.writer()
        try:
            while chunk := src.read(_CHUNK):
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def stage_file(self, source: Path) -> StagedBlob:
        with source.open("rb") as src:
            return self.stage(src)

    def commit(self, staged: StagedBlob) -> None:
        """Make staged bytes visible under their hash (equal bytes already there: drop the copy)."""
        final = self.path_for(staged.sha256)
        if final.exists():
            staged.path.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)

    def discard(self, staged: StagedBlob) -> None:
        staged.path.unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        return self.path_for(sha256).open("rb")

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def delete_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def get_store() -> LocalStore:
    url = urlparse(settings.ARTIFACT_STORE_URL)
    if url.scheme != "file":
        raise ImproperlyConfigured(f"ARTIFACT_STORE_URL scheme {url.scheme!r} is not supported yet (use file://)")
    return LocalStore(Path(url.path))
