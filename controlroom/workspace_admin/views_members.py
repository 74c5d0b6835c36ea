"""The members page: who is in the workspace with which role; invite, add, change, remove."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from controlroom.workspace_admin.forms import AddMemberForm, InviteForm, RoleForm
from controlroom.workspace_admin.selectors import members_of, membership_get
from controlroom.workspace_admin.services import member_add, member_invite, member_remove, member_role_change

MEMBERS_PER_PAGE = 100


def _members_page(request: HttpRequest, access: Access, *, invite: InviteForm, add: AddMemberForm,
                  invited: tuple[str, str] | None = None) -> HttpResponse:
    page = Paginator(members_of(access=access), MEMBERS_PER_PAGE).get_page(request.GET.get("page"))
    response = render(request, "controlroom/admin_members.html", {
        "access": access, "workspace": access.workspace, "page_obj": page, "roles": Role.choices,
        "invite_form": invite, "add_form": add, "invited": invited, "section": "members",
    })
    if invited:
        add_never_cache_headers(response)  # the password is on this page, once
    return response


@login_required
@require_http_methods(["GET", "POST"])
def member_list(request: HttpRequest, workspace: str) -> HttpResponse:
    """List members; a POST with ``action`` "invite" creates a user (its password shown once on
    the answer), "add" adds an existing user."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    invite, add = InviteForm(prefix="invite"), AddMemberForm(prefix="add")
    action = request.POST.get("action") if request.method == "POST" else None
    if action == "invite":
        invite = InviteForm(request.POST, prefix="invite")
        if invite.is_valid():
            try:
                membership, password = member_invite(access=access, **invite.cleaned_data)
            except ServiceError as exc:
                invite.add_error(None, str(exc))
            else:
                messages.success(request, f"{membership.user.get_username()} joined as {membership.role}.")
                invited = (membership.user.get_username(), password)
                return _members_page(request, access, invite=InviteForm(prefix="invite"), add=add, invited=invited)
    elif action == "add":
        add = AddMemberForm(request.POST, prefix="add")
        if add.is_valid():
            try:
                membership = member_add(access=access, **add.cleaned_data)
            except ServiceError as exc:
                add.add_error(None, str(exc))
            else:
                messages.success(request, f"{membership.user.get_username()} joined as {membership.role}.")
                return redirect("workspace_admin:members", workspace=workspace)
    elif request.method == "POST":
        messages.error(request, "Choose whether to invite a new user or add an existing one.")
    return _members_page(request, access, invite=invite, add=add)


def _after_own_change(request: HttpRequest, access: Access, user_id: int, workspace: str) -> HttpResponse:
    # An admin who demoted or removed themselves can no longer see this page.
    if user_id == request.user.pk:
        return redirect("home")
    return redirect("workspace_admin:members", workspace=workspace)


@login_required
@require_POST
def member_role(request: HttpRequest, workspace: str, member: str) -> HttpResponse:
    """Change one member's role (the last admin keeps theirs)."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    membership = membership_get(access=access, membership_id=id_parse(member))
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
        return redirect("workspace_admin:members", workspace=workspace)
    try:
        changed = member_role_change(access=access, membership_id=membership.pk, role=form.cleaned_data["role"])
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("workspace_admin:members", workspace=workspace)
    messages.success(request, f"{changed.user.get_username()} is now {changed.role}.")
    if changed.role == Role.ADMIN:
        return redirect("workspace_admin:members", workspace=workspace)
    return _after_own_change(request, access, changed.user_id, workspace)


@login_required
@require_POST
def member_delete(request: HttpRequest, workspace: str, member: str) -> HttpResponse:
    """Remove one member from the workspace (not the last admin); their account stays."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    membership = membership_get(access=access, membership_id=id_parse(member))
    try:
        user = member_remove(access=access, membership_id=membership.pk)
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("workspace_admin:members", workspace=workspace)
    messages.success(request, f"{user.get_username()} is no longer a member of {access.workspace.name}.")
    return _after_own_change(request, access, user.pk, workspace)
