"""Artifact storage backends. Local disk now (file:// URLs); S3 joins later.

Blobs live at <root>/sha256/<aa>/<bb>/<hash>; a write hashes while it copies into a temp
file in the same folder and renames, so readers never see a partial blob."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_CHUNK = 1 << 20


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store ``source``'s bytes; return (sha256, size). Idempotent for equal content."""
        with source.open("rb") as src:
            return self.put_stream(src)

    def put_stream(self, src: BinaryIO, *, expect_sha256: str | None = None) -> tuple[str, int]:
        """Store a stream's bytes, hashing as they pass; refuse them if the hash is not the one
        announced (nothing is kept then)."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False) as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        if expect_sha256 is not None and sha != expect_sha256:
            os.unlink(dst.name)
            raise ValueError(f"the uploaded bytes hash to {sha}, not {expect_sha256}")
        final = self.path_for(sha)
        if final.exists():
            os.unlink(dst.name)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst.name, final)
        return sha, size

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
