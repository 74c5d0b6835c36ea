from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from artifacts.models import Artifact
from controlroom.access import Access


def artifact_list(*, access: Access) -> QuerySet[Artifact]:
    return Artifact.objects.filter(workspace=access.workspace).select_related("run__job", "phase")


def artifact_get(*, access: Access, artifact_id: int) -> Artifact:
    artifact = artifact_list(access=access).filter(pk=artifact_id).first()
    if artifact is None:
        raise Http404("No such artifact in this workspace.")
    return artifact
