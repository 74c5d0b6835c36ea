"""Registering artifacts and keeping blobs: storage is shared, visibility is per workspace.

A workspace sees a blob only through its grant, which it gets by putting the bytes in the store
itself (an upload, a phase's file, a query's result). Registering by hash alone works only for a
blob the workspace already sees, and the answer for any other hash is the same as for one that
does not exist, so no answer says anything about another workspace's blobs. An artifact kept
outside (``location``) carries its own claim and never stands in for uploaded bytes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.db import transaction

from artifacts.models import Artifact, Blob, BlobGrant
from artifacts.storage import StagedBlob, get_store
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.limits import require_count, require_text
from controlroom.models import Workspace
from controlroom.services import ServiceError

if TYPE_CHECKING:
    from pathlib import Path

    from runs.models import Phase, Run

_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: no trailing newline
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(;[ \w.+=/\"-]*)?")  # fullmatch; no line breaks (it becomes a header)
DEFAULT_MEDIA_TYPE = "application/octet-stream"


def blob_keep(*, workspace: Workspace, staged: StagedBlob) -> Blob:
    """Make staged bytes visible, record their blob and grant it to ``workspace``. Call inside the
    transaction of the record that uses the blob."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("blob_keep must run inside transaction.atomic()")
    get_store().commit(staged)
    blob, _ = Blob.objects.get_or_create(sha256=staged.sha256, defaults={"size": staged.size})
    BlobGrant.objects.get_or_create(workspace=workspace, blob=blob)
    return blob


def blob_store_file(*, workspace: Workspace, path: Path) -> Blob:
    """Store a file's bytes for ``workspace`` (a query's result, for example) and return its blob."""
    staged = get_store().stage_file(path)
    try:
        with transaction.atomic():
            return blob_keep(workspace=workspace, staged=staged)
    finally:
        get_store().discard(staged)  # nothing left if the transaction failed; a no-op once committed


def blob_visible(*, workspace: Workspace, sha256: str) -> Blob | None:
    """The blob with this hash if ``workspace`` may see it, else None (whether or not it exists)."""
    grant = BlobGrant.objects.select_related("blob").filter(workspace=workspace, blob_id=sha256).first()
    return grant.blob if grant else None


def artifact_fields(*, name: object, media_type: object, sha256: object, size: object,
                    location: object = "") -> dict[str, object]:
    """The fields of an artifact registration, checked: a 4xx message for anything wrong."""
    name = require_text(Artifact, "name", name, required=True)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ServiceError("'name' must be a file name (no slashes).")
    media_type = require_text(Artifact, "media_type", media_type) or DEFAULT_MEDIA_TYPE
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise ServiceError("'media_type' must look like type/subtype, e.g. text/csv.")
    sha256 = require_text(Artifact, "sha256", sha256).lower()
    if not _SHA256.fullmatch(sha256):
        raise ServiceError("'sha256' must be 64 hexadecimal characters.")
    return {"name": name, "media_type": media_type, "sha256": sha256, "size": require_count(size, label="size"),
            "location": require_text(Artifact, "location", location).strip()}


def artifact_record(
    *, access: Access, run: Run, phase: Phase | None, name: str, media_type: str, sha256: str, size: int,
    location: str = "", staged: StagedBlob | None = None,
) -> Artifact:
    """Record an artifact of ``run`` (inside the transaction that fences the phase's lease), from
    bytes just staged, from a blob the workspace already sees, or kept by the executor at
    ``location``; audited. The fields must have passed ``artifact_fields``."""
    workspace = run.workspace
    if staged is not None:
        if staged.sha256 != sha256:
            raise ServiceError(f"Upload refused: the bytes hash to {staged.sha256}, not {sha256}.")
        if staged.size != size:
            raise ServiceError(f"Upload refused: {staged.size} bytes arrived, {size} were announced.")
        blob, location = blob_keep(workspace=workspace, staged=staged), ""
    else:
        blob = blob_visible(workspace=workspace, sha256=sha256)
        if blob is not None:
            if blob.size != size:
                raise ServiceError(f"Blob {sha256[:12]} has {blob.size} bytes, not {size}.", code="conflict")
            location = ""  # the bytes we hold win over a claim that they are elsewhere
        elif not location:
            raise ServiceError("No blob with this sha256 is stored for this workspace: upload the bytes or "
                               "give their location.", code="not_found")
    artifact = Artifact.objects.create(
        workspace=workspace, run=run, phase=phase, name=name, media_type=media_type, sha256=sha256, size=size,
        blob=blob, location=location,
    )
    audit_record(access=access, workspace=workspace, action="artifact.register", target=artifact, after={
        "name": name, "sha256": sha256, "size": size, "location": location, "media_type": media_type,
        "run": run.pk, "phase": phase.name if phase else None, "attempt": phase.attempt if phase else None})
    return artifact
