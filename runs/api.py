"""The jobs and runs JSON API (token auth; see controlroom.api for the error shape)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from controlroom.access import Access
from controlroom.api import api_view, cursor_param, json_body
from controlroom.limits import require_text
from controlroom.models import Role
from controlroom.services import ServiceError
from runs import selectors
from runs.models import Job, JobVersion, Run, RunEvent
from runs.services.jobs import job_create, job_update
from runs.services.runs import run_create

PAGE = 100


def _version_json(version: JobVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"number": version.number, "spec_hash": version.spec_hash, "git_repo": version.git_repo,
            "git_sha": version.git_sha, "git_path": version.git_path, "created_at": version.created_at.isoformat(),
            "spec": version.spec}


def _job_json(job: Job) -> dict[str, Any]:
    return {"slug": job.slug, "name": job.name, "description": job.description,
            "current_version": _version_json(job.current_version)}


def run_json(run: Run) -> dict[str, Any]:
    return {
        "rerun_of": run.rerun_of_id, "rerun_mode": run.rerun_mode, "cancel_requested": run.cancel_requested,
        "output_manifest": run.output_manifest,
        "id": run.pk, "job": run.job.slug, "version": run.job_version.number, "environment": run.environment.name,
        "status": run.status, "parameters": run.parameters, "git_sha": run.git_sha, "trigger": run.trigger,
        "created_at": run.created_at.isoformat(), "started_at": run.started_at and run.started_at.isoformat(),
        "finished_at": run.finished_at and run.finished_at.isoformat(), "error": run.error,
        "phases": [
            {"name": p.name, "kind": p.kind, "state": p.state, "attempt": p.attempt, "depends_on": p.depends_on,
             "started_at": p.started_at and p.started_at.isoformat(),
             "finished_at": p.finished_at and p.finished_at.isoformat(), "error": p.error, "output": p.output}
            for p in run.phases.all()
        ],
    }


def _event_json(event: RunEvent) -> dict[str, Any]:
    return {"seq": event.seq, "event_id": str(event.event_id), "type": event.type, "level": event.level,
            "phase": event.phase.name if event.phase else None, "message": event.message,
            "payload": event.payload, "ts": event.ts.isoformat()}


def _spec_args(body: dict[str, Any]) -> dict[str, str]:
    spec = body.get("spec")
    if not isinstance(spec, str):
        raise ServiceError("Send the job spec as YAML text in the 'spec' field.")
    return {"spec_text": spec, **{k: str(body.get(k) or "") for k in ("git_repo", "git_sha", "git_path")}}


@api_view(("GET", "POST"), Role.VIEWER, {"GET": "runs:read", "POST": "runs:write"})
def jobs(request: HttpRequest, access: Access) -> JsonResponse:
    if request.method == "POST":
        access.require(Role.OPERATOR)
        job = job_create(access=access, **_spec_args(json_body(request)))
        return JsonResponse(_job_json(job), status=201)
    return JsonResponse({"jobs": [_job_json(j) for j in selectors.job_list(access=access)[:500]]})


@api_view(("GET", "PUT"), Role.VIEWER, {"GET": "runs:read", "PUT": "runs:write"})
def job(request: HttpRequest, access: Access, job: str) -> JsonResponse:
    obj = selectors.job_get(access=access, slug=job)
    if request.method == "PUT":
        access.require(Role.OPERATOR)
        _, created = job_update(access=access, job=obj, **_spec_args(json_body(request)))
        return JsonResponse({**_job_json(obj), "created": created}, status=201 if created else 200)
    return JsonResponse(_job_json(obj))


def idempotency_key(request: HttpRequest) -> str | None:
    """The request's Idempotency-Key header (printable text up to 200 characters), or None."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None:
        key = require_text(Run, "idempotency_key", key, label="Idempotency-Key")
        if not key.isprintable():
            raise ServiceError("The Idempotency-Key header must be printable text.")
    return key


@api_view(("POST",), Role.OPERATOR, "runs:write")
def job_runs(request: HttpRequest, access: Access, job: str) -> JsonResponse:
    obj = selectors.job_get(access=access, slug=job)
    body = json_body(request)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ServiceError("'parameters' must be a JSON object.")
    run = run_create(access=access, job=obj, environment=str(body.get("environment") or "dev"),
                     parameters=parameters, trigger=Run.Trigger.API, idempotency_key=idempotency_key(request))
    return JsonResponse(run_json(run), status=200 if run.replayed else 201)


@api_view(("GET",), Role.VIEWER, "runs:read")
def runs(request: HttpRequest, access: Access) -> JsonResponse:
    return runs_page(request, access)


def runs_page(request: HttpRequest, access: Access) -> JsonResponse:
    """Newest first, 100 a page; ``before=<id>`` continues."""
    qs = selectors.run_list(access=access, status=request.GET.get("status", "")).prefetch_related("phases")
    before = cursor_param(request, "before")
    if before is not None:
        qs = qs.filter(pk__lt=before)
    page = list(qs[:PAGE])
    return JsonResponse({"runs": [run_json(r) for r in page],
                         "next_before": page[-1].pk if len(page) == PAGE else None})


@api_view(("GET",), Role.VIEWER, "runs:read")
def run(request: HttpRequest, access: Access, run_id: str) -> JsonResponse:
    return JsonResponse(run_json(selectors.run_get(access=access, run_id=run_id)))


@api_view(("GET",), Role.VIEWER, "runs:read")
def run_events(request: HttpRequest, access: Access, run_id: str) -> JsonResponse:
    return events_page(request, access, run_id)


def events_page(request: HttpRequest, access: Access, run_id: str | int) -> JsonResponse:
    """Events after sequence ``after`` (a cursor), oldest first, 100 a page."""
    obj = selectors.run_get(access=access, run_id=run_id)
    after = cursor_param(request, "after") or 0
    events = selectors.run_events(run=obj, after=after, limit=PAGE)
    return JsonResponse({"events": [_event_json(e) for e in events], "status": obj.status,
                         "next_after": events[-1].seq if events else after})
