"""The workspace's audit log page: newest first, keyset pages, filters (a bad value is a
message), before/after diffs with request ids, Verify chain (tampering is reported), and a
streamed CSV of exactly the filtered events of this workspace."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.db import transaction
from django.http import StreamingHttpResponse

from controlroom.audit import AuditTarget, audit_record
from controlroom.models import AuditEvent
from controlroom.workspace_admin import views_audit
from controlroom.workspace_admin.selectors import AUDIT_PAGE_SIZE

pytestmark = pytest.mark.django_db
AUDIT = "/w/acme/settings/audit/"


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def record(world, n: int, *, action: str = "thing.touch", persona: str = "operator", workspace=None) -> None:
    access = world.access(persona) if workspace is None else None
    for i in range(n):
        with transaction.atomic():
            audit_record(access=access, workspace=workspace, actor=world.users["outsider"] if workspace else None,
                         action=action, target=AuditTarget("thing", str(i)), before={"n": i}, after={"n": i + 1},
                         request_id=f"req-{action}-{i}")


def ids(response) -> list[int]:
    return [event.pk for event, _ in response.context["rows"]]


def test_newest_first_in_keyset_pages_covering_every_event_once(world, django_assert_max_num_queries):
    record(world, AUDIT_PAGE_SIZE + 7)
    client = world.client("admin")
    expected = list(AuditEvent.objects.filter(workspace=world.workspace).order_by("-id").values_list("id", flat=True))
    with django_assert_max_num_queries(8):
        first = client.get(AUDIT)
    assert ids(first) == expected[:AUDIT_PAGE_SIZE]
    assert first.context["next_query"] == f"before={expected[AUDIT_PAGE_SIZE - 1]}"
    # A new event does not shift the next page (keyset, not offset).
    record(world, 1, action="late.event")
    second = client.get(f"{AUDIT}?{first.context['next_query']}")
    assert ids(second) == expected[AUDIT_PAGE_SIZE:] and second.context["next_query"] == ""
    assert "newest" in second.content.decode()


def test_filters_narrow_by_actor_action_target_and_time(world):
    record(world, 3, action="thing.touch", persona="operator")
    record(world, 2, action="thing.poke", persona="analyst")
    client = world.client("admin")
    by_actor = client.get(AUDIT, {"actor": "ANALYST"})
    assert {e.actor_label for e, _ in by_actor.context["rows"]} == {"analyst"} and len(ids(by_actor)) == 2
    by_prefix = client.get(AUDIT, {"action": "thing."})
    assert len(ids(by_prefix)) == 5
    exact = client.get(AUDIT, {"action": "thing.touch", "target_type": "thing", "target_id": "1"})
    assert [(e.action, e.target_id) for e, _ in exact.context["rows"]] == [("thing.touch", "1")]
    AuditEvent.objects.filter(action="thing.poke").update(created_at=dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC))
    in_range = client.get(AUDIT, {"since": "2020-01-01", "until": "2020-01-02T00:00"})
    assert {e.action for e, _ in in_range.context["rows"]} == {"thing.poke"} and len(ids(in_range)) == 2
    assert not ids(client.get(AUDIT, {"since": "2020-01-02", "until": "2020-01-03"}))
    assert not ids(client.get(AUDIT, {"actor": "outsider"}))


@pytest.mark.parametrize(("params", "message"), [
    ({"since": "yesterday"}, "From: Enter a valid date/time."),
    ({"until": "2026-13-45"}, "Until: Enter a valid date/time."),
    ({"since": "99999-01-01"}, "Enter a valid date/time."),
    ({"since": "2026-02-01", "until": "2026-01-01"}, "The time range is empty"),
    ({"before": "99999999999999999999999"}, "That page does not exist"),
    ({"before": "-3"}, "That page does not exist"),
    ({"actor": "x" * 201}, "Ensure this value has at most 200 characters"),
])
def test_bad_filter_values_are_a_message_not_a_500(world, params, message):
    response = world.client("admin").get(AUDIT, params)
    assert response.status_code == 200 and message in response.context["filter_error"]
    assert response.context["rows"] == [] and 'id="filter-error"' in response.content.decode()
    export = world.client("admin").get(f"{AUDIT}export.csv", params, follow=True)
    assert any(message in m for m in shown(export)) and not isinstance(export, StreamingHttpResponse)


def test_each_event_shows_its_diff_and_request_id(world):
    client = world.client("admin")
    viewer = world.users["viewer"].memberships.get()
    client.post(f"/w/acme/settings/members/{viewer.pk}/role/", {"role": "analyst"}, HTTP_X_REQUEST_ID="req-role-1")
    response = client.get(AUDIT, {"action": "membership.role_change"})
    [(event, changes)] = response.context["rows"]
    assert event.request_id == "req-role-1"
    assert [(c.field, c.kind, c.old, c.new) for c in changes] == [
        ("role", "changed", "viewer", "analyst"), ("user", "same", "viewer", "viewer")]
    body = response.content.decode()
    assert "<del>viewer</del>" in body and "<ins>analyst</ins>" in body and "req-role-1" in body


def test_verify_chain_reports_intact_then_tampered(world):
    record(world, 3)
    client = world.client("admin")
    intact = client.post(f"{AUDIT}verify/?action=thing.", follow=True)
    assert intact.redirect_chain[-1][0] == f"{AUDIT}?action=thing."
    [message] = shown(intact)
    assert message.startswith("Audit chain verified:") and message in intact.content.decode()
    victim = AuditEvent.objects.filter(workspace=world.workspace, action="thing.touch").order_by("id").first()
    AuditEvent.objects.filter(pk=victim.pk).update(actor_label="mallory")
    broken = client.post(f"{AUDIT}verify/", follow=True)
    [message] = shown(broken)
    assert message == f"Audit chain broken: event {victim.pk} was edited: its hash does not match it."
    # The other workspace's chain is not this page's business: tampering there is not reported here.
    AuditEvent.objects.filter(pk=victim.pk).update(actor_label=victim.actor_label)
    theirs = AuditEvent.objects.filter(workspace=world.other).first()
    AuditEvent.objects.filter(pk=theirs.pk).update(actor_label="mallory")
    assert shown(client.post(f"{AUDIT}verify/", follow=True))[0].startswith("Audit chain verified:")
    assert client.get(f"{AUDIT}verify/").status_code == 405


def test_deleting_the_newest_events_is_reported(world):
    record(world, 3)
    AuditEvent.objects.filter(pk=AuditEvent.objects.filter(workspace=world.workspace).latest("id").pk).delete()
    [message] = shown(world.client("admin").post(f"{AUDIT}verify/", follow=True))
    assert message.startswith("Audit chain broken:") and "newest events were deleted" in message


def export_rows(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse) and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="audit-acme.csv"'
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_has_exactly_the_filtered_events_of_this_workspace(world):
    record(world, 4, action="thing.touch")
    record(world, 2, action="thing.poke", persona="analyst")
    record(world, 3, action="thing.touch", workspace=world.other)  # same action, other workspace
    client = world.client("admin")
    rows = export_rows(client.get(f"{AUDIT}export.csv", {"action": "thing.touch"}))
    expected = AuditEvent.objects.filter(workspace=world.workspace, action="thing.touch").order_by("-id")
    assert [int(r["id"]) for r in rows] == [e.pk for e in expected] and len(rows) == 4
    assert {r["actor"] for r in rows} == {"operator"} and rows[0]["after"] == '{"n": 4}'
    assert rows[-1]["request_id"] == "req-thing.touch-0" and rows[0]["hash"] == expected[0].hash
    everything = export_rows(client.get(f"{AUDIT}export.csv"))
    other_ids = set(AuditEvent.objects.filter(workspace=world.other).values_list("id", flat=True))
    assert len(everything) == AuditEvent.objects.filter(workspace=world.workspace).count()
    assert not other_ids & {int(r["id"]) for r in everything}
    # The page filter "before" does not cut the export: it holds every filtered event.
    assert len(export_rows(client.get(f"{AUDIT}export.csv", {"action": "thing.", "before": "1"}))) == 6


def test_csv_streams_many_events_in_batches_and_defuses_formulas(world, monkeypatch):
    monkeypatch.setattr(views_audit, "CSV_BATCH", 50)
    with transaction.atomic():
        for i in range(120):
            audit_record(access=world.access("admin"), action="bulk.touch", target=AuditTarget("thing", str(i)))
        audit_record(access=world.access("admin"), action="bulk.touch", target=AuditTarget("thing", "=HYPERLINK(1)"))
    response = world.client("admin").get(f"{AUDIT}export.csv", {"action": "bulk."})
    chunks = list(response.streaming_content)
    assert len(chunks) == 3  # streamed in batches of 50 rows, not one string
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 121 and rows[0]["target_id"] == "'=HYPERLINK(1)"


def test_only_admins_of_this_workspace_reach_verify(world):
    assert world.client("operator").post(f"{AUDIT}verify/").status_code == 403
    assert world.client("outsider").post(f"{AUDIT}verify/").status_code == 404
