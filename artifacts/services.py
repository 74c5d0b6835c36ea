"""Registering artifacts: the blob is stored once; the record ties it to a run and phase."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from django.db import transaction

from artifacts.models import Artifact, Blob
from artifacts.storage import get_store
from controlroom.models import Workspace
from controlroom.services import ServiceError

if TYPE_CHECKING:
    from runs.models import Phase, Run


def artifact_register(
    *, workspace: Workspace, name: str, path: Path, media_type: str,
    run: Run | None = None, phase: Phase | None = None,
) -> Artifact:
    """Store ``path`` content-addressed and record it as an artifact of ``run``."""
    sha, size = get_store().put_file(path)
    with transaction.atomic():
        blob, _ = Blob.objects.get_or_create(sha256=sha, defaults={"size": size})
        return Artifact.objects.create(
            workspace=workspace, run=run, phase=phase, name=name, media_type=media_type, blob=blob
        )


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def artifact_register_blob(
    *, workspace: Workspace, name: str, media_type: str, sha256: str, size: int, location: str = "",
    upload: BinaryIO | None = None, run: Run | None = None, phase: Phase | None = None,
) -> Artifact:
    """Register an artifact by hash: the bytes are uploaded now, already in the store (the same
    content registered before), or kept by the executor at ``location``."""
    sha256 = (sha256 or "").lower()
    if not _SHA256.match(sha256):
        raise ServiceError("sha256 must be 64 hexadecimal characters.")
    if not name or "/" in name or len(name) > 255:
        raise ServiceError("An artifact needs a file name (no slashes).")
    store = get_store()
    if upload is not None:
        try:
            _, actual = store.put_stream(upload, expect_sha256=sha256)
        except ValueError as exc:
            raise ServiceError(f"Upload refused: {exc}.") from None
        if actual != size:
            raise ServiceError(f"Upload refused: {actual} bytes arrived, {size} were announced.")
        location = ""
    with transaction.atomic():
        blob = Blob.objects.filter(sha256=sha256).first()
        if blob is None:
            if upload is None and not location:
                raise ServiceError("No blob with this sha256 is stored: upload the bytes or give their location.",
                                   code="not_found")
            blob = Blob.objects.create(sha256=sha256, size=size, location=location)
        elif blob.size != size:
            raise ServiceError(f"Blob {sha256[:12]} has {blob.size} bytes, not {size}.", code="conflict")
        return Artifact.objects.create(
            workspace=workspace, run=run, phase=phase, name=name, media_type=media_type or "application/octet-stream",
            blob=blob,
        )
