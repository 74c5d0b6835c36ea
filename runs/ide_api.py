"""The IDE API's jobs and pipelines (the token names the workspace; mounted under ``/api/v1/`` and
``/v1/``):

- ``POST compute/job`` ``{"job", "environment"?, "parameters"?}`` and ``POST pipelines/run``
  ``{"pipeline", "environment"?, "inputs"?}`` (a pipeline is a job; its inputs are the job's
  parameters) start a run through ``run_create``, as the console does: the prod rule, the typed
  parameters, admission, the audit. 201 with the run, its status URL and its console page;
  ``Idempotency-Key`` makes a retry safe (200 with the first run).
- ``GET compute/job/<id>`` and ``GET pipelines/run/<id>``: the run with its phases.
- ``GET openapi.json``: the IDE API's OpenAPI document (runs/openapi.py ``IDE_PATHS``).

Scope ``compute:job`` for both (``runs:write`` starts runs too, ``runs:read`` reads them). A job
of another workspace is as unknown as one that does not exist (404)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from controlroom.access import Access
from controlroom.api import api_error, api_view, json_body
from controlroom.models import Environment, Role
from runs import selectors
from runs.api import idempotency_key, run_json
from runs.models import Run
from runs.openapi import ide_document
from runs.services.runs import run_create
from runs.spec import SpecError

START_SCOPES = ("compute:job", "runs:write")
READ_SCOPES = ("compute:job", "runs:read")


def _field_error(field: str, message: str) -> JsonResponse:
    return api_error(400, "invalid", message, field=field)


def _answer(request: HttpRequest, run: Run, *, status: int) -> JsonResponse:
    path = request.path.rstrip("/")
    base = path.rsplit("/", 1)[0] if path.rsplit("/", 1)[-1].isdigit() else path
    console = reverse("runs:run_detail", args=[run.workspace.slug, run.pk])
    return JsonResponse({**run_json(run), "status_url": request.build_absolute_uri(f"{base}/{run.pk}"),
                         "console_url": request.build_absolute_uri(console)}, status=status)


def _start(request: HttpRequest, access: Access, *, name_field: str, values_field: str) -> JsonResponse:
    body = json_body(request)
    name = body.get(name_field)
    if not isinstance(name, str) or not name.strip():
        return _field_error(name_field, f"'{name_field}' must name a job of this workspace.")
    environment = body.get("environment") or Environment.Name.DEV
    if environment not in Environment.Name.values:
        return _field_error("environment", "'environment' must be dev, stage or prod.")
    values: Any = body.get(values_field) or {}
    if not isinstance(values, dict):
        return _field_error(values_field, f"'{values_field}' must be a JSON object of the job's parameters.")
    job = selectors.job_get(access=access, slug=name)  # 404 for another workspace's job too
    try:
        run = run_create(access=access, job=job, environment=environment, parameters=values,
                         trigger=Run.Trigger.API, idempotency_key=idempotency_key(request))
    except SpecError as exc:
        return api_error(400, "invalid_parameters", f"'{values_field}': {exc}", field=values_field,
                         errors=exc.errors)
    return _answer(request, run, status=200 if run.replayed else 201)


def openapi(request: HttpRequest) -> JsonResponse:
    """The IDE API's OpenAPI document, its server being the prefix it was asked under."""
    return JsonResponse(ide_document(request.build_absolute_uri(request.path.rsplit("/", 1)[0])))


@api_view(("POST",), Role.OPERATOR, START_SCOPES)
def compute_job(request: HttpRequest, access: Access) -> JsonResponse:
    """Start a run of the named job."""
    return _start(request, access, name_field="job", values_field="parameters")


@api_view(("POST",), Role.OPERATOR, START_SCOPES)
def pipeline_run(request: HttpRequest, access: Access) -> JsonResponse:
    """Start a run of the named pipeline (a job) with ``inputs`` as its parameters."""
    return _start(request, access, name_field="pipeline", values_field="inputs")


@api_view(("GET",), Role.VIEWER, READ_SCOPES)
def run_status(request: HttpRequest, access: Access, run_id: int) -> JsonResponse:
    """One run of the workspace with its phases (for compute/job/<id> and pipelines/run/<id>)."""
    return _answer(request, selectors.run_get(access=access, run_id=run_id), status=200)
