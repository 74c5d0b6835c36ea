"""Each workspace's datasets area, readable from SQL and writable from SQL by nobody.

Files a workspace's jobs and queries read live in ``DATASETS_DIR/<workspace slug>/``. DuckDB never
gets that folder as a directory it may use (an allowed directory is writable too, and a read-only
connection still runs ``COPY … TO``); it gets a file system registered under ``datasets://``
whose only way in is ``open(mode="rb")``, rooted at the one workspace's area, that resolves every
path (symlinks included) and refuses any that leaves the area. So no SQL of any role can write a
dataset or read another workspace's files, whatever the parser lets through.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from pathlib import Path
from typing import Any

import fsspec
from django.conf import settings

from controlroom.models import Workspace

PROTOCOL = "datasets"
URL = f"{PROTOCOL}://"  # what $datasets_dir is: read_csv($datasets_dir || '/orders.csv')


def datasets_area(workspace: Workspace | str) -> Path:
    """The folder holding ``workspace``'s datasets (created when missing)."""
    slug = workspace if isinstance(workspace, str) else workspace.slug
    area = (settings.DATASETS_DIR / slug).resolve()
    if area.parent != settings.DATASETS_DIR.resolve():
        raise ValueError(f"workspace slug {slug!r} does not name a folder")
    area.mkdir(parents=True, exist_ok=True)
    return area


class _PositionalFile(io.RawIOBase):
    """A read-only file whose position is kept per thread, read with ``os.pread``. DuckDB's
    threads share one handle and call ``seek`` then ``read`` as two calls: with one shared
    position another thread's seek lands in between and the reader gets the wrong bytes (a big
    Parquet file then fails with "TProtocolException: Invalid data")."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        if stat.S_ISDIR(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        self._local = threading.local()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return getattr(self._local, "position", 0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.tell(), os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._local.position = max(0, base + offset)
        return self._local.position

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self.tell())
        buffer[:len(data)] = data
        self._local.position = self.tell() + len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self._fd).st_size - self.tell())
        data = os.pread(self._fd, size, self.tell())
        self._local.position = self.tell() + len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class ReadOnlyDatasets(fsspec.AbstractFileSystem):
    """``datasets://<path>``: files under one root, read only. Paths are shown root-relative."""

    protocol = (PROTOCOL,)
    what = "datasets"  # how messages name the area
    root_marker = "/"
    cachable = False  # one instance per engine: never shared between workspaces by fsspec's cache

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = os.path.realpath(root)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path, url = str(path), f"{cls.protocol[0]}://"
        if path.startswith(url):
            path = path[len(url):]
        return "/" + path.lstrip("/")

    @property
    def url(self) -> str:
        """``<protocol>://``: how SQL names this area."""
        return f"{self.protocol[0]}://"

    def _real(self, path: str) -> str:
        """The file's real path, or PermissionError if it (or a link on the way) leaves the root."""
        relative = self._strip_protocol(path).lstrip("/")
        real = os.path.realpath(os.path.join(self.root, relative))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(f"{self.url}{relative} is outside this workspace's {self.what}")
        return real

    def _entry(self, real: str) -> dict[str, Any]:
        stat = os.stat(real)
        relative = os.path.relpath(real, self.root)
        name = "/" if relative == "." else "/" + relative
        return {"name": name, "size": stat.st_size, "type": "directory" if os.path.isdir(real) else "file",
                "mtime": stat.st_mtime}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        real = self._real(path)
        if not os.path.exists(real):
            raise FileNotFoundError(path)
        if not os.path.isdir(real):
            entries = [self._entry(real)]
        else:
            entries = []
            for child in sorted(os.listdir(real)):
                try:
                    entries.append(self._entry(self._real(os.path.relpath(os.path.join(real, child), self.root))))
                except (PermissionError, FileNotFoundError):
                    continue  # a link out of the area, or one that dangles: not listed
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        real = self._real(path)
        if not os.path.exists(real):
            raise FileNotFoundError(path)
        return {**self._entry(real), "name": self._strip_protocol(path)}

    def modified(self, path: str) -> Any:
        import datetime as dt

        return dt.datetime.fromtimestamp(os.stat(self._real(path)).st_mtime, tz=dt.UTC)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError(f"{self.what} are read-only: write results to a table or an artifact instead")
        try:
            return _PositionalFile(self._real(path))
        except OSError as exc:  # the message names the datasets path, never the server's
            raise type(exc)(exc.errno, exc.strerror, self.url + self._strip_protocol(path).lstrip("/")) from None

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(f"{self.what} are read-only: write results to a table or an artifact instead")

    mkdir = makedirs = rm = rm_file = _rm = rmdir = mv = cp_file = copy = put_file = touch = pipe_file = _refuse


LAKEHOUSE_PROTOCOL = "lakehouse"
LAKEHOUSE_URL = f"{LAKEHOUSE_PROTOCOL}://"


class ReadOnlyLakehouse(ReadOnlyDatasets):
    """``lakehouse://<path>``: the embedded lakehouse folder of one workspace and environment
    (``<LAKEHOUSE_DIR>/<workspace>/<environment>``), read only: DuckDB reads a table version's
    Parquet files from it (the tables page's "Open in SQL editor" without Trino)."""

    protocol = (LAKEHOUSE_PROTOCOL,)
    what = "lakehouse files"


def lakehouse_area(workspace: Workspace, environment_name: str) -> Path:
    """The embedded lakehouse folder of ``workspace`` in an environment (it may not exist yet)."""
    return Path(settings.LAKEHOUSE_DIR) / workspace.slug / environment_name
