"""Artifacts of a phase: registered only under the phase's live lease, in the same transaction.

Bytes are staged (hashed and counted into a temp file of the store) before the transaction, so
no lock is held while a large file is copied; the lease is then checked, the staged bytes made
visible and the artifact written in one fenced transaction. Whatever is refused on the way
leaves no file behind."""

from __future__ import annotations

from artifacts.models import Artifact
from artifacts.services import artifact_fields, artifact_record
from artifacts.storage import StagedBlob, get_store
from controlroom.access import Access
from controlroom.services import ServiceError
from runs.services.fence import lease_fence


def phase_artifact_add(
    *, access: Access, phase_id: int, lease_token: str, name: object, media_type: object, sha256: object,
    size: object, location: object = "", staged: StagedBlob | None = None,
) -> Artifact:
    """Register an artifact of the phase holding ``lease_token`` (StaleLease if it does not).
    ``staged`` bytes are kept only if the registration commits; they are discarded otherwise."""
    try:
        fields = artifact_fields(name=name, media_type=media_type, sha256=sha256, size=size, location=location)
        with lease_fence(phase_id=phase_id, lease_token=lease_token) as phase:
            if phase.run.workspace_id != access.workspace.pk:
                raise ServiceError("No such phase in this workspace.", code="not_found")
            return artifact_record(access=access, run=phase.run, phase=phase, staged=staged, **fields)
    finally:
        if staged is not None:
            get_store().discard(staged)  # a no-op once committed: the file was renamed into place
