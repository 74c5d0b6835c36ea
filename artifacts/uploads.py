"""Uploads stream straight into the store's staging area, hashed and counted as they arrive:
one pass over the bytes, no copy in memory or in Django's temp files, and a body over the limit
is cut off mid-stream with nothing kept."""

from __future__ import annotations

import re
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest

from artifacts.storage import BlobTooLarge, BlobWriter, StagedBlob, get_store
from controlroom.services import ServiceError

SHA256_HEADER = "X-Content-SHA256"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def declared_sha256(request: HttpRequest) -> str | None:
    """The sha256 a sender declared in the X-Content-SHA256 header before the body (lower-case
    hex), None without one. A store may then write straight to the content's place; the bytes
    are still hashed as they arrive and refused unless they match."""
    value = request.headers.get(SHA256_HEADER)
    if value is None:
        return None
    if not _SHA256.fullmatch(value):
        raise ServiceError(f"The {SHA256_HEADER} header must be 64 lower-case hex digits.")
    return value


class StagedUpload(UploadedFile):
    """The 'file' part of a request, already staged in the store (see ``staged``)."""

    def __init__(self, staged: StagedBlob, name: str, content_type: str) -> None:
        super().__init__(file=None, name=name, content_type=content_type, size=staged.size)
        self.staged = staged


class StagingUploadHandler(FileUploadHandler):
    """Takes the one file part named ``field``; other file parts are skipped. The file's sha256,
    when the sender declared it (``declared_sha256``), is handed to the store's writer."""

    def __init__(self, request: HttpRequest, *, max_bytes: int, field: str = "file") -> None:
        super().__init__(request)
        self.max_bytes, self.field = max_bytes, field
        self.sha256 = declared_sha256(request)
        self.writer: BlobWriter | None = None
        self.staged: StagedBlob | None = None
        self.too_large = False

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, *args, **kwargs)
        if field_name != self.field or self.writer is not None:
            raise SkipFile
        self.writer = get_store().writer(max_bytes=self.max_bytes, sha256=self.sha256)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self.writer is not None
        try:
            self.writer.write(raw_data)
        except BlobTooLarge:
            self.too_large = True
            raise StopUpload(connection_reset=True) from None

    def file_complete(self, file_size: int) -> StagedUpload | None:
        if self.writer is None or self.too_large:
            return None
        self.staged = self.writer.finish()
        return StagedUpload(self.staged, self.file_name or "upload", self.content_type or "")

    def upload_interrupted(self) -> None:
        if self.writer is not None and self.staged is None:
            self.writer.abort()

    def discard(self) -> None:
        """Remove whatever was staged (on any refusal after the body was read)."""
        if self.staged is not None:
            get_store().discard(self.staged)
        elif self.writer is not None:
            self.writer.abort()
