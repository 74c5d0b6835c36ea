"""The schedule page of a job: one cron schedule per environment."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone as django_tz
from django.views.decorators.http import require_http_methods

from controlroom.models import Environment, Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from runs import selectors
from runs.models import Job, JobSchedule
from runs.services.schedules import ScheduleInvalid, next_fires, schedule_delete, schedule_list, schedule_set

# An environment without a schedule shows an empty cron: nothing looks scheduled that is not.
DEFAULTS = {"cron": "", "timezone": "UTC", "missed_policy": JobSchedule.Missed.SKIP,
            "late_after_s": 300, "enabled": True, "parameters": {}}


@login_required
@require_http_methods(["GET", "POST"])
def schedule_edit(request: HttpRequest, workspace: str, job: str) -> HttpResponse:
    minimum = Role.OPERATOR if request.method == "POST" else Role.ANALYST
    access = workspace_access(user=request.user, slug=workspace, minimum=minimum)
    obj = selectors.job_get(access=access, slug=job)
    posted: dict[str, Any] | None = None
    if request.method == "POST":
        environment = request.POST.get("environment", "")
        existing = {s.environment.name: s for s in schedule_list(access=access, job=obj)}
        try:
            if request.POST.get("action") == "delete":
                if environment not in existing:
                    raise ServiceError(f"There is no schedule in {environment or 'this environment'} to remove.")
                schedule_delete(access=access, schedule=existing[environment])
                messages.success(request, f"Schedule in {environment} removed.")
            else:
                posted = _posted_values(request)
                saved = schedule_set(access=access, job=obj, environment=environment, **posted)
                state = "enabled" if saved.enabled else "disabled"
                messages.success(request, f"Schedule in {environment} saved ({saved.cron}, {saved.timezone}, {state}).")
        except (ServiceError, PermissionDenied) as exc:
            errors = exc.errors if isinstance(exc, ScheduleInvalid) else [str(exc)]
            context = _context(access, obj, environment, posted)
            context["errors"] = {"environment": environment, "messages": errors}
            return render(request, "runs/schedule_form.html", context, status=400)
        return redirect("schedules:schedule_edit", workspace=workspace, job=obj.slug)
    return render(request, "runs/schedule_form.html", _context(access, obj, None, None))


def _posted_values(request: HttpRequest) -> dict[str, Any]:
    return {
        "cron": request.POST.get("cron", ""),
        "timezone": request.POST.get("timezone", "").strip(),
        "missed_policy": request.POST.get("missed_policy", ""),
        "late_after_s": request.POST.get("late_after_s", "").strip(),
        "enabled": request.POST.get("enabled") == "on",
        "parameters": {k[6:]: v for k, v in request.POST.items() if k.startswith("param_")},
    }


def _context(access, job: Job, posted_env: str | None, posted: dict[str, Any] | None) -> dict[str, Any]:
    """One form per environment, filled from its schedule, or from the rejected input."""
    declared = (job.current_version.spec.get("parameters") or {}) if job.current_version else {}
    schedules = {s.environment.name: s for s in schedule_list(access=access, job=job)}
    forms = []
    for env in Environment.Name.values:
        schedule = schedules.get(env)
        values = dict(DEFAULTS)
        if schedule is not None:
            values.update(cron=schedule.cron, timezone=schedule.timezone, missed_policy=schedule.missed_policy,
                          late_after_s=schedule.late_after_s, enabled=schedule.enabled,
                          parameters=schedule.parameters)
        if posted is not None and env == posted_env:
            values.update(posted)
        params = [(name, spec, values["parameters"].get(name, "")) for name, spec in declared.items()]
        fires = (next_fires(cron=schedule.cron, zone=schedule.timezone, after=django_tz.now())
                 if schedule is not None and schedule.enabled else [])
        forms.append({"environment": env, "schedule": schedule, "values": values, "params": params,
                      "next_fires": fires})
    return {"access": access, "workspace": access.workspace, "job": job, "forms": forms,
            "policies": JobSchedule.Missed.choices, "can_operate": access.can(Role.OPERATOR)}
