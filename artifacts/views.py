from __future__ import annotations

import re

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from artifacts.previews import preview_for
from artifacts.selectors import artifact_get, artifact_list
from artifacts.storage import get_store
from controlroom.selectors import workspace_access

STREAM_BLOCK = 1 << 20  # bytes read from the store per chunk of a download
# Types a browser would run or render as this site's own page (scripts, HTML, SVG, XML): served
# as plain bytes, since an artifact is whatever a job (or an outside executor) wrote.
_ACTIVE_TYPES = re.compile(r"(java|ecma)script|html|xml|svg|x-sh|wasm", re.IGNORECASE)


def download_type(media_type: str) -> str:
    """The Content-Type an artifact is downloaded with: its own, unless a browser could run it."""
    return "application/octet-stream" if _ACTIVE_TYPES.search(media_type or "") else media_type


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
    # Streamed from the store a block at a time: flat memory whatever the size.
    response = FileResponse(get_store().open(artifact.sha256), as_attachment=True, filename=artifact.name,
                            content_type=download_type(artifact.media_type))
    response.block_size = STREAM_BLOCK
    response["Content-Length"] = artifact.size
    response["ETag"] = f'"{artifact.sha256}"'
    # Bytes a job wrote are never a page or a script of this site: a sandbox with no sources,
    # so neither a browser opening it nor a <script src> pointing at it runs anything.
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["X-Content-Type-Options"] = "nosniff"
    return response
