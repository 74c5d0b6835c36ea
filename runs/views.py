"""Job and run pages. Views parse input, call one service, render."""

from __future__ import annotations

import difflib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from controlroom.models import Environment, Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from runs import overview, selectors
from runs.forms import JobSpecForm
from runs.models import Run, RunStatus
from runs.services.job_hooks import job_hooks_of
from runs.services.jobs import job_create, job_update
from runs.services.reruns import run_rerun
from runs.services.runs import run_cancel, run_create
from runs.spec import SpecError

RUN_PAGE = 50
NEW_JOB_TEMPLATE = """name: my_job
description: What this job does.
parameters:
  limit:
    type: integer
    default: 10
phases:
  - name: extract
    kind: sql
    config:
      sql: SELECT range AS n FROM range($limit)
      table: numbers
"""


@login_required
def job_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    return render(request, "runs/job_list.html", {
        "access": access, "workspace": access.workspace, "jobs": overview.jobs_with_health(access=access),
        "can_operate": access.can(Role.OPERATOR), "health_runs": overview.HEALTH_RUNS,
    })


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    form = JobSpecForm(request.POST or None, initial={"spec_text": NEW_JOB_TEMPLATE})
    if request.method == "POST" and form.is_valid():
        try:
            job = job_create(access=access, **form.cleaned_data)
        except (SpecError, ServiceError) as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"Job {job.slug} created (version 1).")
            return redirect("runs:job_detail", workspace=workspace, job=job.slug)
    return render(request, "runs/job_form.html", {"access": access, "workspace": access.workspace, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def job_edit(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    obj = selectors.job_get(access=access, slug=job)
    current = obj.current_version
    initial = {"spec_text": current.spec_text, "git_repo": current.git_repo, "git_path": current.git_path}
    form = JobSpecForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            version, created = job_update(access=access, job=obj, **form.cleaned_data)
        except (SpecError, ServiceError) as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"Saved as version {version.number}." if created else "No changes to save.")
            return redirect("runs:job_detail", workspace=workspace, job=obj.slug)
    return render(request, "runs/job_form.html", {
        "access": access, "workspace": access.workspace, "form": form, "job": obj,
    })


def _form_errors(form: JobSpecForm, exc: Exception) -> None:
    for message in exc.errors if isinstance(exc, SpecError) else [str(exc)]:
        form.add_error("spec_text" if isinstance(exc, SpecError) else None, message)


@login_required
def job_detail(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    obj = selectors.job_get(access=access, slug=job)
    return render(request, "runs/job_detail.html", {
        "access": access, "workspace": access.workspace, "job": obj,
        "versions": obj.versions.all()[:20], "runs": selectors.run_list(access=access, job=obj)[:20],
        "schedules": obj.schedules.select_related("environment").filter(enabled=True),
        "parameters": (obj.current_version.spec.get("parameters") or {}) if obj.current_version else {},
        "environments": Environment.Name.values, "can_operate": access.can(Role.OPERATOR),
        "hooks": job_hooks_of(access=access, job=obj),
    })


@login_required
@require_POST
def job_trigger(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    obj = selectors.job_get(access=access, slug=job)
    params = {k[6:]: v for k, v in request.POST.items() if k.startswith("param_")}
    try:
        run = run_create(access=access, job=obj, environment=request.POST.get("environment", "dev"),
                         parameters=params, trigger=Run.Trigger.UI)
    except (SpecError, ServiceError, PermissionDenied) as exc:
        messages.error(request, f"Could not start the run: {exc}")
        return redirect("runs:job_detail", workspace=workspace, job=obj.slug)
    return redirect("runs:run_detail", workspace=workspace, run_id=run.pk)


@login_required
def run_list(request: HttpRequest, workspace: str) -> HttpResponse:
    """Run history with filters; keyset pages (before=<id>) stay fast however many runs exist."""
    access = workspace_access(user=request.user, slug=workspace)
    filters, error = selectors.RunFilters.from_query(request.GET)
    runs = list(selectors.run_history(access=access, filters=filters)[: RUN_PAGE + 1])
    page, more = runs[:RUN_PAGE], len(runs) > RUN_PAGE
    return render(request, "runs/run_list.html", {
        "access": access, "workspace": access.workspace, "runs": page, "filters": filters, "error": error,
        "next_before": page[-1].pk if more else None, "query": filters.query_string(),
        "statuses": RunStatus.choices, "triggers": Run.Trigger.choices, "environments": Environment.Name.values,
        "jobs": selectors.job_list(access=access).values_list("slug", flat=True)[:500],
    })


@login_required
def job_version(request: HttpRequest, workspace: str, job: str, number: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace)
    obj = selectors.job_get(access=access, slug=job)
    version = obj.versions.filter(number=number).first()
    if version is None:
        raise Http404(f"{obj.slug} has no version {number}.")
    previous = obj.versions.filter(number__lt=number).order_by("-number").first()
    diff = difflib.unified_diff(
        (previous.spec_text if previous else "").splitlines(), version.spec_text.splitlines(),
        f"v{previous.number}" if previous else "(none)", f"v{version.number}", lineterm="")
    return render(request, "runs/job_version.html", {
        "access": access, "workspace": access.workspace, "job": obj, "version": version, "previous": previous,
        "diff": list(diff)[2:],
    })


@login_required
@require_POST
def run_cancel_view(request: HttpRequest, workspace: str, run_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    run = selectors.run_get(access=access, run_id=run_id)
    try:
        run_cancel(access=access, run=run)
        messages.success(request, "Cancel requested: pending phases stopped; running ones stop within a few "
                                  "seconds.")
    except ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("runs:run_detail", workspace=workspace, run_id=run.pk)


@login_required
@require_POST
def run_rerun_view(request: HttpRequest, workspace: str, run_id: int) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    run = selectors.run_get(access=access, run_id=run_id)
    try:
        new = run_rerun(access=access, run=run, mode=request.POST.get("mode", ""),
                        phases=request.POST.getlist("phase")[:500])
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
        return redirect("runs:run_detail", workspace=workspace, run_id=run.pk)
    return redirect("runs:run_detail", workspace=workspace, run_id=new.pk)
