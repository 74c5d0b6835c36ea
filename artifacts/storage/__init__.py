"""Artifact storage: one ``BlobStore`` protocol (``base``), local disk (``local``) and S3 (``s3``).

``get_store()`` gives the store ``ARTIFACT_STORE_URL`` names (``file:///path`` or
``s3://bucket/prefix``), built once per process and settings. Callers stage, commit, open and read
ranges by sha256; none of them ever sees where the bytes live.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from artifacts.storage.base import (
    BlobHashMismatch,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    BlobWriter,
    RangeFile,
    StagedBlob,
)

__all__ = ["BlobHashMismatch", "BlobStore", "BlobStoreError", "BlobTooLarge", "BlobWriter", "RangeFile", "StagedBlob",
           "get_store"]

_STORES: dict[tuple[object, ...], BlobStore] = {}
_LOCK = threading.Lock()


def _settings_key() -> tuple[object, ...]:
    names = ("ARTIFACT_STORE_URL", "ARTIFACT_STORE_S3_ENDPOINT", "ARTIFACT_STORE_S3_REGION",
             "ARTIFACT_STORE_S3_ACCESS_KEY", "ARTIFACT_STORE_S3_SECRET_KEY")
    # The pid too: a forked worker builds its own S3 client rather than share its parent's sockets.
    return (os.getpid(), *(getattr(settings, name, "") for name in names))


def store_from_url(url: str) -> BlobStore:
    """Build the store a URL names (settings give the S3 endpoint, region and key pair)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from artifacts.storage.local import LocalStore

        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ImproperlyConfigured(f"ARTIFACT_STORE_URL={url!r} names no bucket (s3://bucket/prefix)")
        from artifacts.storage.s3 import S3Store

        return S3Store(
            bucket=parsed.netloc, prefix=parsed.path, endpoint=getattr(settings, "ARTIFACT_STORE_S3_ENDPOINT", ""),
            region=getattr(settings, "ARTIFACT_STORE_S3_REGION", ""),
            access_key=getattr(settings, "ARTIFACT_STORE_S3_ACCESS_KEY", ""),
            secret_key=getattr(settings, "ARTIFACT_STORE_S3_SECRET_KEY", ""),
        )
    raise ImproperlyConfigured(f"ARTIFACT_STORE_URL scheme {parsed.scheme!r} is not supported (file:// or s3://)")


def get_store() -> BlobStore:
    """The configured store, built once per process and settings."""
    key = _settings_key()
    store = _STORES.get(key)
    if store is None:
        with _LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = store_from_url(str(key[1]))
    return store


@checks.register("artifact_store", deploy=True)
def check_artifact_store(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """``manage.py check --deploy``: the store answers with its credentials (one request)."""
    try:
        get_store().check()
    except (BlobStoreError, ImproperlyConfigured) as exc:
        return [checks.Error(str(exc), id="artifacts.E001")]
    return []
