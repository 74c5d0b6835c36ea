from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from artifacts.previews import preview_for
from artifacts.selectors import artifact_get, artifact_list
from artifacts.storage import get_store
from controlroom.selectors import workspace_access


@login_required
def artifact_index(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    page = Paginator(artifact_list(access=access), 50).get_page(request.GET.get("page"))
    return render(request, "artifacts/artifact_list.html", {
        "access": access, "workspace": access.workspace, "page": page,
    })


@login_required
def artifact_detail(request: HttpRequest, workspace: str, artifact_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    artifact = artifact_get(access=access, artifact_id=artifact_id)
    return render(request, "artifacts/artifact_detail.html", {
        "access": access, "workspace": access.workspace, "artifact": artifact, "preview": preview_for(artifact),
    })


@login_required
def artifact_download(request: HttpRequest, workspace: str, artifact_id: int) -> FileResponse:
    access = workspace_access(user=request.user, slug=workspace)
    artifact = artifact_get(access=access, artifact_id=artifact_id)
    if not artifact.stored:
        raise Http404(f"This artifact is kept outside Control Room, at {artifact.location}.")
    response = FileResponse(get_store().open(artifact.sha256), as_attachment=True, filename=artifact.name,
                            content_type=artifact.media_type)
    response["ETag"] = f'"{artifact.sha256}"'
    return response
