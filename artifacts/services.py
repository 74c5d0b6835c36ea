"""Registering artifacts: the blob is stored once; the record ties it to a run and phase."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.db import transaction

from artifacts.models import Artifact, Blob
from artifacts.storage import get_store
from controlroom.models import Workspace

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
