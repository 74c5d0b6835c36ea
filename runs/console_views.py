"""The ops console's pages: the workspace overview, a job's grid, pausing a schedule."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlroom.ids import id_parse
from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from runs import overview, selectors
from runs.models import JobSchedule, RunStatus
from runs.services.schedules import schedule_pause


@login_required
def workspace_home(request: HttpRequest, workspace: str) -> HttpResponse:
    """The overview: the last 24 h by state, failing jobs, waiting runs, late schedules, failures."""
    access = workspace_access(user=request.user, slug=workspace)
    return render(request, "runs/overview.html", {
        "access": access, "workspace": access.workspace, "overview": overview.workspace_overview(access=access),
        "states": RunStatus.values,
    })


@login_required
def job_grid(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    """Runs by phases of one job, each cell linking to that phase's log on the run page."""
    access = workspace_access(user=request.user, slug=workspace)
    obj = selectors.job_get(access=access, slug=job)
    raw_before = request.GET.get("before", "")
    before = id_parse(raw_before)
    if raw_before and before is None:
        messages.error(request, "'before' must be a run number; showing the newest runs.")
    grid = overview.job_grid(job=obj, before=before)
    return render(request, "runs/job_grid.html", {
        "access": access, "workspace": access.workspace, "job": obj, "grid": grid,
        "older": grid.runs[0].pk if len(grid.runs) == overview.GRID_RUNS else None,
    })


@login_required
@require_POST
def job_pause(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    """Pause or resume the job's schedule in one environment (from the jobs list)."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.OPERATOR)
    obj = selectors.job_get(access=access, slug=job)
    environment = request.POST.get("environment", "")
    schedule = JobSchedule.objects.filter(job=obj, environment__name=environment).select_related(
        "job", "environment").first()
    if schedule is None:
        messages.error(request, f"{obj.slug} has no schedule in {environment or 'that environment'} to pause.")
        return redirect("runs:job_list", workspace=workspace)
    paused = request.POST.get("action") == "pause"
    try:
        schedule_pause(access=access, schedule=schedule, paused=paused)
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, f"Could not change the schedule: {exc}")
    else:
        messages.success(request, f"{obj.slug} in {environment}: schedule {'paused' if paused else 'resumed'}.")
    return redirect("runs:job_list", workspace=workspace)
