"""The workspace settings page: SQL limits, concurrent runs, and who may run in prod."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from controlroom.workspace_admin.forms import WorkspaceSettingsForm
from controlroom.workspace_admin.services import workspace_settings_update

FIELDS = ("sql_row_cap", "sql_timeout_s", "max_concurrent_runs", "operators_run_in_prod")


@login_required
@require_http_methods(["GET", "POST"])
def workspace_settings(request: HttpRequest, workspace: str) -> HttpResponse:
    """Show and save the workspace's settings (audited as ``workspace.settings``)."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    ws = access.workspace
    if request.method == "POST":
        form = WorkspaceSettingsForm(request.POST)
        if form.is_valid():
            try:
                changed = workspace_settings_update(access=access, **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Saved: {', '.join(form[name].label for name in changed)}."
                                 if changed else "Nothing changed.")
                return redirect("workspace_admin:settings", workspace=workspace)
    else:
        form = WorkspaceSettingsForm(initial={name: getattr(ws, name) for name in FIELDS})
    return render(request, "controlroom/admin_settings.html", {
        "access": access, "workspace": ws, "form": form, "section": "settings",
    })
