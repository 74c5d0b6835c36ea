"""The workspace's audit log: filtered, keyset-paginated, verifiable, exportable as CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from controlroom.audit import audit_verify
from controlroom.models import AuditEvent, Role
from controlroom.selectors import workspace_access
from controlroom.workspace_admin.forms import AuditFilterForm
from controlroom.workspace_admin.selectors import audit_changes, audit_events, audit_page

logger = logging.getLogger("controlroom.audit")
CSV_HEADER = ("id", "seq", "created_at", "actor", "actor_user_id", "action", "target_type", "target_id",
              "request_id", "ip", "before", "after", "hash")
CSV_BATCH = 500
# A spreadsheet runs a cell that starts with one of these as a formula (an actor label or a
# target id is text someone chose): such a cell gets a leading apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _query(params: QueryDict, **changes: object) -> str:
    """``params`` as a query string, with ``changes`` set (None removes a key)."""
    query = params.copy()
    for key, value in changes.items():
        query.pop(key, None)
        if value is not None:
            query[key] = str(value)
    return query.urlencode()


def _form_error(form: AuditFilterForm) -> str:
    errors = [f"{form[name].label}: {error}" if name != "__all__" else error
              for name, field_errors in form.errors.items() for error in field_errors]
    return " ".join(errors)


@login_required
@require_GET
def audit_log(request: HttpRequest, workspace: str) -> HttpResponse:
    """One page of the workspace's events, newest first, with each event's before/after diff."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    form = AuditFilterForm(request.GET)
    events, next_before = [], None
    if form.is_valid():
        events, next_before = audit_page(access=access, filters=form.audit_filter(),
                                         before_id=form.cleaned_data["before"])
    return render(request, "controlroom/admin_audit.html", {
        "access": access, "workspace": access.workspace, "form": form, "section": "audit",
        "rows": [(event, audit_changes(event)) for event in events],
        "first_page": form.is_valid() and form.cleaned_data["before"] is None,
        "newest_query": _query(request.GET, before=None),
        "next_query": _query(request.GET, before=next_before) if next_before else "",
        "filter_error": "" if form.is_valid() else _form_error(form),
    })


@login_required
@require_POST
def audit_verify_view(request: HttpRequest, workspace: str) -> HttpResponse:
    """Verify the workspace's chain (every hash, link and the sealed head) and say so."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    verdict = audit_verify(workspace=access.workspace)
    if verdict.ok:
        messages.success(request, f"Audit chain verified: {verdict.events} events, each linked to the one "
                                  "before it, and the sealed head matches the newest.")
    else:
        logger.warning("audit chain %s fails to verify: %s", verdict.chain, verdict.reason,
                       extra={"chain": verdict.chain, "first_bad_id": verdict.first_bad_id})
        messages.error(request, f"Audit chain broken: {verdict.reason}.")
    url = reverse("workspace_admin:audit", kwargs={"workspace": workspace})
    query = _query(request.GET, before=None)
    return redirect(f"{url}?{query}" if query else url)


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for count, e in enumerate(events.iterator(chunk_size=CSV_BATCH), start=1):
        writer.writerow([_cell(v) for v in (
            e.pk, e.seq, e.created_at.isoformat(), e.actor_label, e.actor_user_id, e.action, e.target_type,
            e.target_id, e.request_id, e.ip,
            "" if e.before is None else json.dumps(e.before, sort_keys=True),
            "" if e.after is None else json.dumps(e.after, sort_keys=True), e.hash)])
        if count % CSV_BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@login_required
@require_GET
def audit_export(request: HttpRequest, workspace: str) -> HttpResponse:
    """The filtered events (all pages, newest first) as CSV, streamed: flat memory however many."""
    access = workspace_access(user=request.user, slug=workspace, minimum=Role.ADMIN)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        messages.error(request, f"Nothing exported. {_form_error(form)}")
        return redirect(f"{reverse('workspace_admin:audit', kwargs={'workspace': workspace})}?"
                        f"{_query(request.GET, before=None)}")
    events = audit_events(access=access, filters=form.audit_filter())
    response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{access.workspace.slug}.csv"'
    return response
