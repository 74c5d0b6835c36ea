"""Local disk (``file:///absolute/path``): the layout existing data dirs already have.

Blobs live at <root>/sha256/<aa>/<bb>/<hash>; staging is a temp file under <root>/tmp, and commit
renames it into place, which readers see whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from artifacts.storage.base import BlobStoreError, BlobWriter, StagedBlob, StoreOps


class LocalBlobWriter(BlobWriter):
    """Stages into a temp file of the store."""

    def __init__(self, tmp_dir: Path, max_bytes: int | None, sha256: str | None = None) -> None:
        super().__init__(max_bytes, sha256)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False)

    def _keep(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _close(self) -> Any:
        self._file.close()
        return Path(self._file.name)

    def abort(self) -> None:
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)


class LocalStore(StoreOps):
    """Blobs in a folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise FileNotFoundError(f"no blob {sha256[:70]!r}")  # never a path outside the store
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def writer(self, *, max_bytes: int | None = None, sha256: str | None = None) -> BlobWriter:
        """A writer that stages bytes as they arrive (``sha256``: checked at finish)."""
        return LocalBlobWriter(self.root / "tmp", max_bytes, sha256)

    def commit(self, staged: StagedBlob) -> None:
        """Make staged bytes visible under their hash (equal bytes already there: drop the copy)."""
        final, source = self._path(staged.sha256), Path(staged.token)
        if final.exists():
            source.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, final)

    def discard(self, staged: StagedBlob) -> None:
        """Drop staged bytes; a no-op once committed (the file was renamed into place)."""
        Path(staged.token).unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        """The blob as a file opened for reading."""
        return self._path(sha256).open("rb")

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end)."""
        if length <= 0:
            return b""
        with self._path(sha256).open("rb") as fh:
            return os.pread(fh.fileno(), length, start)

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        try:
            return self._path(sha256).exists()
        except FileNotFoundError:
            return False

    def size(self, sha256: str) -> int:
        """The blob's length."""
        return self._path(sha256).stat().st_size

    def check(self) -> None:
        """The root must be a folder we can write in."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.root).close()
        except OSError as exc:
            raise BlobStoreError(f"The artifact folder {self.root} is not writable ({exc.strerror}).") from exc

    def delete_all(self) -> None:
        """Remove the whole folder."""
        shutil.rmtree(self.root, ignore_errors=True)
