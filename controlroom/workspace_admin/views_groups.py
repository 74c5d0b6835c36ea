"""Identity groups: which identity provider groups give which role in this workspace (single
sign-on, controlroom/sso.py). Admins only; each change audited."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.ids import id_parse
from controlroom.limits import text_problem
from controlroom.models import IdpGroupMapping, Membership, Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError


def group_map(*, access: Access, group: str, role: str) -> IdpGroupMapping:
    """Map an IdP group to a role in the access's workspace (admins; audited)."""
    access.require(Role.ADMIN)
    group = (group or "").strip()
    if not group or len(group) > 200 or text_problem(group) is not None:
        raise ServiceError("A group name is 1 to 200 characters of text, as the identity provider sends it.")
    if role not in Role.values:
        raise ServiceError("Choose a role.")
    try:
        with transaction.atomic():
            mapping = IdpGroupMapping.objects.create(workspace=access.workspace, group=group, role=role)
            audit_record(access=access, action="idp_group.map", target=mapping, after={"group": group, "role": role})
    except IntegrityError:
        raise ServiceError(f"The group {group!r} is already mapped in this workspace; remove it first.") from None
    return mapping


def group_unmap(*, access: Access, mapping_id: int | None) -> None:
    """Remove a mapping (members keep their role until their next sign-on)."""
    access.require(Role.ADMIN)
    with transaction.atomic():
        mapping = IdpGroupMapping.objects.filter(workspace=access.workspace, pk=mapping_id).first()
        if mapping is None:
            raise ServiceError("No such group mapping in this workspace.", code="not_found")
        audit_record(access=access, action="idp_group.unmap", target=mapping,
                     before={"group": mapping.group, "role": mapping.role})
        mapping.delete()


@login_required
@require_http_methods(["GET", "POST"])
def group_list(request: HttpRequest, workspace: str) -> HttpResponse:
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    if request.method == "POST":
        try:
            if "remove" in request.POST:
                group_unmap(access=access, mapping_id=id_parse(request.POST.get("remove")))
                messages.success(request, "Mapping removed; its members keep their role until their next sign-in.")
            else:
                mapping = group_map(access=access, group=request.POST.get("group", ""),
                                    role=request.POST.get("role", ""))
                messages.success(request, f"Members of {mapping.group} get {mapping.role} at their next sign-in.")
        except ServiceError as exc:
            messages.error(request, str(exc))
        return redirect("workspace_admin:groups", workspace=workspace)
    return render(request, "controlroom/admin_groups.html", {
        "access": access, "workspace": access.workspace, "section": "groups", "roles": Role.choices,
        "mappings": IdpGroupMapping.objects.filter(workspace=access.workspace),
        "from_groups": Membership.objects.filter(workspace=access.workspace, source=Membership.Source.IDP).count(),
    })
