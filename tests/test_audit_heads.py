"""The audit chains' sealed heads: truncation, rewritten chains and forged or missing heads are
found, and so are whole chains deleted (a workspace's, the platform's) or cut from the front and
restarted; deleting a user changes nothing that is hashed; what PostgreSQL stores differently
(jsonb numbers, inet addresses) is hashed as stored; heads reach the JSON log."""

import importlib
import json

import pytest
from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client

from controlroom.audit import (
    _digest,
    _hashed_fields,
    audit_record,
    audit_verify,
    audit_verify_all,
    audit_verify_chain,
    chain_name,
    head_mac,
)
from controlroom.models import AuditEvent, AuditHead, Workspace
from controlroom.request_id import current_client_ip
from tests.test_audit import json_lines
from tests.test_settings import manage

pytestmark = pytest.mark.django_db


def chain_events(workspace):
    return list(AuditEvent.objects.filter(workspace=workspace).order_by("id"))


def head(workspace) -> AuditHead:
    return AuditHead.objects.get(chain=chain_name(workspace.pk))


def append(world, action: str = "test.append") -> AuditEvent:
    with transaction.atomic():
        return audit_record(access=world.access("admin"), action=action, target=world.workspace)


def test_every_append_seals_the_head_of_its_chain(world, demo_job):
    newest = chain_events(world.workspace)[-1]
    sealed = head(world.workspace)
    assert (sealed.seq, sealed.hash) == (newest.seq, newest.hash) == (len(chain_events(world.workspace)), newest.hash)
    assert sealed.mac == head_mac(chain_name(world.workspace.pk), newest.seq, newest.hash)
    assert audit_verify(workspace=world.workspace).ok and audit_verify(workspace=world.other).ok


def test_deleting_the_newest_events_is_detected(world, demo_job):
    AuditEvent.objects.filter(pk=chain_events(world.workspace)[-1].pk).delete()
    verdict = audit_verify(workspace=world.workspace)
    assert not verdict.ok and "newest events were deleted" in verdict.reason
    assert audit_verify_chain(workspace=world.workspace) is not None  # the compatible form agrees
    assert audit_verify(workspace=world.other).ok


def test_a_cut_stays_visible_after_later_appends(world, demo_job):
    AuditEvent.objects.filter(pk=chain_events(world.workspace)[-1].pk).delete()
    appended = append(world)
    verdict = audit_verify(workspace=world.workspace)
    assert not verdict.ok and verdict.first_bad_id == appended.pk and "were deleted" in verdict.reason


def test_a_recomputed_chain_does_not_match_its_head(world, demo_job):
    # Edit an event and recompute every hash after it: each row verifies, the sealed head does not.
    prev = None
    for event in chain_events(world.workspace):
        if prev is None:
            event.actor_label = "mallory"
        else:
            event.prev_hash = prev
        event.hash = _digest(event.prev_hash, _hashed_fields(event))
        AuditEvent.objects.filter(pk=event.pk).update(actor_label=event.actor_label, prev_hash=event.prev_hash,
                                                      hash=event.hash)
        prev = event.hash
    verdict = audit_verify(workspace=world.workspace)
    assert not verdict.ok and "without the key" in verdict.reason


def test_a_forged_head_is_detected_and_not_laundered_by_the_next_append(world, demo_job):
    events = chain_events(world.workspace)
    AuditEvent.objects.filter(pk=events[-1].pk).delete()
    # Point the head at the new end, sealed with a key that is not ours.
    AuditHead.objects.filter(chain=chain_name(world.workspace.pk)).update(
        seq=events[-2].seq, hash=events[-2].hash,
        mac=head_mac(chain_name(world.workspace.pk), events[-2].seq, events[-2].hash, key=b"guessed"))
    assert "forged" in audit_verify(workspace=world.workspace).reason
    append(world)
    assert "forged" in audit_verify(workspace=world.workspace).reason


def test_a_missing_head_is_detected_and_not_recreated(world, demo_job):
    AuditHead.objects.filter(chain=chain_name(world.workspace.pk)).delete()
    assert "head is missing" in audit_verify(workspace=world.workspace).reason
    append(world)
    assert "head is missing" in audit_verify(workspace=world.workspace).reason
    assert not AuditHead.objects.filter(chain=chain_name(world.workspace.pk)).exists()


def test_a_head_whose_events_are_all_gone_is_reported(world):
    AuditEvent.objects.filter(workspace=world.other).delete()
    verdicts = {verdict.chain: verdict for verdict in audit_verify_all()}
    assert "newest events were deleted" in verdicts[chain_name(world.other.pk)].reason
    assert verdicts[chain_name(world.workspace.pk)].ok


def test_the_audit_key_rotates_with_fallbacks(world, settings):
    assert audit_verify(workspace=world.workspace).ok  # sealed with the key derived from SECRET_KEY
    settings.AUDIT_KEY = "k" * 16 + "0123456789abcdef"
    assert "forged" in audit_verify(workspace=world.workspace).reason  # a head is only as good as its key
    settings.AUDIT_KEY_FALLBACKS = ["derived"]
    assert audit_verify(workspace=world.workspace).ok
    append(world)  # resealed under the new key: the fallback is no longer needed
    settings.AUDIT_KEY_FALLBACKS = []
    assert audit_verify(workspace=world.workspace).ok


def test_each_committed_head_is_logged_and_only_those(world, django_capture_on_commit_callbacks):
    with json_lines("controlroom.audit") as lines, django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            append(world, "test.rolled_back")
            1 / 0  # noqa: B018
        event = append(world)
    sealed = head(world.workspace)
    heads = [line for line in lines if line["message"] == "audit head"]
    assert [(line["chain"], line["seq"], line["hash"], line["mac"]) for line in heads] == [
        (chain_name(world.workspace.pk), event.seq, event.hash, sealed.mac)]


def test_audit_verify_command_reports_each_chain_and_fails_on_tampering(world, demo_job, capsys):
    call_command("audit_verify")
    out = capsys.readouterr().out
    count = len(chain_events(world.workspace))
    assert f"{chain_name(world.workspace.pk)} (acme): ok ({count} events)" in out
    assert f"{chain_name(world.other.pk)} (other): ok (" in out
    AuditEvent.objects.filter(pk=chain_events(world.workspace)[-1].pk).delete()
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert failure.value.returncode == 1
    out = capsys.readouterr().out
    assert f"{chain_name(world.workspace.pk)} (acme): TAMPERED: " in out and "(other): ok" in out


def test_migration_seals_chains_without_a_head_and_leaves_existing_heads(world, demo_job):
    migration = importlib.import_module("controlroom.migrations.0006_audit_heads")
    AuditHead.objects.filter(chain=chain_name(world.workspace.pk)).delete()  # as before 0006
    forged = chain_name(world.other.pk)
    AuditHead.objects.filter(chain=forged).update(mac="0" * 64)
    migration._seal(global_apps, None)
    assert audit_verify(workspace=world.workspace).ok
    assert "forged" in audit_verify(workspace=world.other).reason  # not resealed over


def test_platform_events_form_their_own_sealed_chain(db):
    user = get_user_model().objects.create_user("someone", password="x")
    with transaction.atomic():
        event = audit_record(access=None, actor=user, action="test.platform", target=user)
    assert event.workspace_id is None and event.actor_label == "someone" and event.seq == 1
    assert AuditHead.objects.get(chain="platform").hash == event.hash
    assert audit_verify(workspace=None).ok


def test_a_weak_audit_key_stops_the_process(tmp_path):
    result = manage(tmp_path, {"AUDIT_KEY": "changeme"}, "check")
    assert result.returncode != 0 and "AUDIT_KEY (and each of AUDIT_KEY_FALLBACKS) must be at least 32" in result.stderr


# What PostgreSQL's jsonb gives back for a float, as JSON text: an integral float written with an
# exponent comes back as an integer with all its digits, -0.0 as 0.0; the others as they were.
STORED_AS = {1e40: "1" + "0" * 40, -1e40: "-1" + "0" * 40, -0.0: "0.0", 1.5e300: "15" + "0" * 299,
             123456789012345678.0: "123456789012345680", 1e16: "10000000000000000", 1e-7: "1e-07",
             1.5e-7: "1.5e-07", 5e-324: "5e-324", 1e15: "1000000000000000.0", 0.1: "0.1", 2**70: str(2**70)}


@pytest.mark.parametrize("amount", [1e40, -0.0, 1.5e300, 123456789012345678.0])
def test_run_parameters_are_hashed_as_the_database_gives_them_back(world, demo_job, amount):
    from runs.services.runs import run_create

    run = run_create(access=world.access("operator"), job=demo_job, parameters={"min_amount": amount})
    event = AuditEvent.objects.get(action="run.create", target_id=str(run.pk))
    assert json.dumps(event.after["parameters"]["min_amount"]) == STORED_AS[amount]
    assert audit_verify(workspace=world.workspace).ok  # on PostgreSQL, jsonb's rewrite is no edit


def test_values_and_addresses_are_hashed_as_stored(world):
    odd = {"numbers": list(STORED_AS), "nested": {"z": [{"x": -0.0}], 7: (1e22,)}}
    addresses = ["fe80::1%eth0", "::102:304", "FE80:0:0::1", "::ffff:1.2.3.4", "not-an-ip", "1.2.3.4%eth0"]
    for address in addresses:
        token = current_client_ip.set(address)
        try:
            with transaction.atomic():
                audit_record(access=world.access("admin"), action="test.odd", target=world.workspace,
                             before=odd, after={"address": address})
        finally:
            current_client_ip.reset(token)
    events = list(AuditEvent.objects.filter(action="test.odd").order_by("id"))
    assert [e.ip for e in events] == [
        "fe80::1", "::1.2.3.4" if connection.vendor == "postgresql" else "::102:304", "fe80::1",
        "::ffff:1.2.3.4", None, None]
    assert [json.dumps(n) for n in events[0].before["numbers"]] == list(STORED_AS.values())
    assert events[0].before["nested"] == {"z": [{"x": 0.0}], "7": [10**22]}
    assert audit_verify(workspace=world.workspace).ok


def test_a_workspace_whose_whole_chain_was_deleted_is_reported(world, capsys):
    AuditEvent.objects.filter(workspace=world.other).delete()
    AuditHead.objects.filter(chain=chain_name(world.other.pk)).delete()
    verdict = audit_verify(workspace=world.other)
    assert not verdict.ok and "whole chain was deleted" in verdict.reason
    verdicts = {verdict.chain: verdict for verdict in audit_verify_all()}
    assert "whole chain was deleted" in verdicts[chain_name(world.other.pk)].reason
    assert verdicts[chain_name(world.workspace.pk)].ok
    with pytest.raises(CommandError):
        call_command("audit_verify")
    assert f"{chain_name(world.other.pk)} (other): TAMPERED: " in capsys.readouterr().out


def test_a_chain_cut_from_the_front_and_restarted_is_reported(world, demo_job):
    AuditEvent.objects.filter(workspace=world.workspace).delete()
    AuditHead.objects.filter(chain=chain_name(world.workspace.pk)).delete()
    restarted = append(world)  # a new chain, sealed, whose first event is not the creation
    assert restarted.seq == 1
    verdict = audit_verify(workspace=world.workspace)
    assert not verdict.ok and verdict.first_bad_id == restarted.pk and "workspace's creation" in verdict.reason
    assert audit_verify(workspace=world.other).ok


def test_a_workspace_made_in_the_admin_starts_its_chain_there_and_must_keep_it(world):
    root = get_user_model().objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(root)
    response = client.post("/admin/controlroom/workspace/add/", {
        "slug": "beta", "name": "Beta", "sql_row_cap": "1000", "sql_timeout_s": "60"})
    assert response.status_code == 302
    assert [verdict for verdict in audit_verify_all() if not verdict.ok] == []  # "admin.add" starts it
    beta = Workspace.objects.get(slug="beta")
    AuditEvent.objects.filter(workspace=beta).delete()
    AuditHead.objects.filter(chain=chain_name(beta.pk)).delete()
    assert [verdict.chain for verdict in audit_verify_all() if not verdict.ok] == [chain_name(beta.pk)]


def test_a_deleted_platform_chain_is_reported_once_someone_signed_in(world):
    assert audit_verify(workspace=None).ok and chain_name(None) not in {v.chain for v in audit_verify_all()}
    world.client("viewer")  # signs in: recorded on the platform chain, last_login set
    AuditEvent.objects.filter(workspace=None).delete()
    AuditHead.objects.filter(chain=chain_name(None)).delete()
    verdict = audit_verify(workspace=None)
    assert not verdict.ok and "platform chain is missing" in verdict.reason
    assert "platform chain is missing" in {v.chain: v for v in audit_verify_all()}[chain_name(None)].reason
