"""The connections and secret references pages of a workspace's admins: list, create, edit,
delete, make default, and Test connection (an htmx fragment). Secret values never reach a page:
the pages show only whether a reference resolves."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from connections.configure import (
    connection_create,
    connection_delete,
    connection_update,
    secret_ref_create,
    secret_ref_delete,
    secret_ref_update,
)
from connections.models import Connection
from connections.probe import connection_test
from connections.selectors import (
    SecretStatus,
    connection_get,
    connections_of,
    secret_ref_get,
    secret_refs_of,
    secret_status,
    secret_statuses,
    secret_users,
)
from connections.services import connection_set_default
from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import Environment, Role
from controlroom.selectors import workspace_access
from controlroom.services import ServiceError
from controlroom.workspace_admin.forms_connections import FORMS, ConnectionForm, SecretRefForm


def _admin(request: HttpRequest, workspace: str) -> Access:
    return workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)


@login_required
def connection_list(request: HttpRequest, workspace: str) -> HttpResponse:
    """Every connection of the workspace with its scope, default badge and password reference
    (whether it resolves now, never its value), and a Test connection button each."""
    access = _admin(request, workspace)
    connections = list(connections_of(access=access))
    refs = {ref.name: ref for ref in secret_refs_of(access=access)}
    statuses: dict[str, SecretStatus] = {}

    def status(name: str) -> SecretStatus:  # each reference resolved once per page
        if name not in statuses:
            statuses[name] = secret_status(refs[name]) if name in refs else SecretStatus(
                ok=False, reason="This workspace has no secret reference of that name.")
        return statuses[name]

    rows = []
    for conn in connections:
        secrets = [("password", conn.password_ref.name)] if conn.password_ref else []
        secrets += [(use, name) for use, name in conn.secrets_named() if name]
        rows.append({"conn": conn, "secrets": [(label, name, status(name)) for label, name in secrets]})
    return render(request, "controlroom/admin_connections.html", {
        "access": access, "workspace": access.workspace, "rows": rows, "kinds": Connection.Kind.choices,
        "sql_kinds": Connection.SQL_KINDS, "section": "connections",
    })


def _form(access: Access, kind: str, data: dict | None = None, initial: dict | None = None) -> ConnectionForm:
    return FORMS[kind](data, initial=initial, environments=Environment.objects.filter(
        workspace=access.workspace).order_by("pk"), secret_refs=secret_refs_of(access=access))


def _form_page(request: HttpRequest, access: Access, form: ConnectionForm, kind: str,
               conn: Connection | None) -> HttpResponse:
    return render(request, "controlroom/admin_connection_form.html", {
        "access": access, "workspace": access.workspace, "form": form, "conn": conn,
        "kind_label": Connection.Kind(kind).label, "kind": kind, "section": "connections",
        "has_secrets": secret_refs_of(access=access).exists(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def connection_new(request: HttpRequest, workspace: str, kind: str) -> HttpResponse:
    """The form of one connection kind; a valid POST creates the connection (``connection.create``)."""
    access = _admin(request, workspace)
    if kind not in FORMS:
        raise Http404("No such connection kind.")
    form = _form(access, kind, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            conn = connection_create(access=access, kind=kind, **form.service_arguments())
        except ValidationError as exc:
            form.errors_apply(exc)
        except ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Connection {conn.name} created. Test it below.")
            return redirect("workspace_admin:connection_edit", workspace=workspace, connection=conn.pk)
    return _form_page(request, access, form, kind, None)


@login_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: HttpRequest, workspace: str, connection: str) -> HttpResponse:
    """Edit one connection with its kind's form (``connection.update`` when anything changed)."""
    access = _admin(request, workspace)
    conn = connection_get(access=access, connection_id=id_parse(connection))
    if request.method == "POST":
        form = _form(access, conn.kind, request.POST)
        if form.is_valid():
            try:
                connection_update(access=access, connection_id=conn.pk, **form.service_arguments())
            except ValidationError as exc:
                form.errors_apply(exc)
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Connection {form.cleaned_data['name']} saved.")
                return redirect("workspace_admin:connection_edit", workspace=workspace, connection=conn.pk)
    else:
        form = _form(access, conn.kind, initial=FORMS[conn.kind].initial_from(conn))
    return _form_page(request, access, form, conn.kind, conn)


@login_required
@require_POST
def connection_remove(request: HttpRequest, workspace: str, connection: str) -> HttpResponse:
    """Delete one connection, unless something protects it (then the page says what)."""
    access = _admin(request, workspace)
    conn = connection_get(access=access, connection_id=id_parse(connection))
    try:
        connection_delete(access=access, connection_id=conn.pk)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Connection {conn.name} deleted.")
    return redirect("workspace_admin:connections", workspace=workspace)


@login_required
@require_POST
def connection_default(request: HttpRequest, workspace: str, connection: str) -> HttpResponse:
    """Make a SQL connection the editor's default (``connection.set_default``)."""
    access = _admin(request, workspace)
    conn = connection_get(access=access, connection_id=id_parse(connection))
    try:
        connection_set_default(access=access, connection=conn)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The SQL editor now opens on {conn.name}.")
    return redirect("workspace_admin:connections", workspace=workspace)


@login_required
@require_POST
def connection_probe(request: HttpRequest, workspace: str, connection: str) -> HttpResponse:
    """Test connection: one real round trip; the answer is a one-line fragment (or, without
    htmx, a message on the list)."""
    access = _admin(request, workspace)
    conn = connection_get(access=access, connection_id=id_parse(connection))
    result = connection_test(access=access, connection=conn)
    if request.headers.get("HX-Request"):
        return render(request, "controlroom/admin_connections.html#probe_result", {"result": result, "conn": conn})
    text = f"{conn.name}: {result.message} ({result.ms} ms)."
    (messages.success if result.ok else messages.error)(request, text)
    return redirect("workspace_admin:connections", workspace=workspace)


@login_required
@require_http_methods(["GET", "POST"])
def secret_list(request: HttpRequest, workspace: str) -> HttpResponse:
    """The workspace's secret references, whether each resolves now, and a form to add one."""
    access = _admin(request, workspace)
    form = SecretRefForm(request.POST if request.method == "POST" else None, workspace_slug=workspace)
    if request.method == "POST" and form.is_valid():
        try:
            ref = secret_ref_create(access=access, **form.cleaned_data)
        except ValidationError as exc:
            form.errors_apply(exc)
        else:
            messages.success(request, f"Secret reference {ref.name} added.")
            return redirect("workspace_admin:secrets", workspace=workspace)
    refs = list(secret_refs_of(access=access))
    statuses, users = secret_statuses(refs), secret_users(access=access)
    return render(request, "controlroom/admin_secrets.html", {
        "access": access, "workspace": access.workspace,
        "rows": [(ref, statuses[ref.pk], users.get(ref.pk, [])) for ref in refs],
        "form": form, "section": "secrets",
    })


@login_required
@require_http_methods(["GET", "POST"])
def secret_edit(request: HttpRequest, workspace: str, secret: str) -> HttpResponse:
    """Change a secret reference's name, source or locator (``secret_ref.update``)."""
    access = _admin(request, workspace)
    ref = secret_ref_get(access=access, secret_id=id_parse(secret))
    if request.method == "POST":
        form = SecretRefForm(request.POST, workspace_slug=workspace)
        if form.is_valid():
            try:
                secret_ref_update(access=access, secret_id=ref.pk, **form.cleaned_data)
            except ValidationError as exc:
                form.errors_apply(exc)
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Secret reference {form.cleaned_data['name']} saved.")
                return redirect("workspace_admin:secrets", workspace=workspace)
    else:
        form = SecretRefForm(initial={"name": ref.name, "source": ref.source, "locator": ref.locator},
                             workspace_slug=workspace)
    return render(request, "controlroom/admin_secret_form.html", {
        "access": access, "workspace": access.workspace, "form": form, "ref": ref, "status": secret_status(ref),
        "section": "secrets",
    })


@login_required
@require_POST
def secret_remove(request: HttpRequest, workspace: str, secret: str) -> HttpResponse:
    """Delete a secret reference nothing uses; refused, naming the user, while one does."""
    access = _admin(request, workspace)
    ref = secret_ref_get(access=access, secret_id=id_parse(secret))
    try:
        secret_ref_delete(access=access, secret_id=ref.pk)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Secret reference {ref.name} deleted.")
    return redirect("workspace_admin:secrets", workspace=workspace)
