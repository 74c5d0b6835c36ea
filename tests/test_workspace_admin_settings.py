"""The workspace settings page: SQL limits, concurrent runs and the prod rule, range-checked
(10**40 is a form error, not a crash) and saved through a service with an audited before/after."""

from __future__ import annotations

import pytest

from controlroom.models import AuditEvent, Workspace
from controlroom.services import ServiceError
from controlroom.workspace_admin.services import SQL_ROW_CAP_MAX, workspace_settings_update
from runs.models import Run

pytestmark = pytest.mark.django_db
SETTINGS = "/w/acme/settings/"
VALID = {"sql_row_cap": "5000", "sql_timeout_s": "60", "max_concurrent_runs": "3", "operators_run_in_prod": "on"}


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_the_form_shows_the_current_values(world):
    Workspace.objects.filter(pk=world.workspace.pk).update(sql_row_cap=1234, max_concurrent_runs=None)
    form = world.client("admin").get(SETTINGS).context["form"]
    assert form.initial == {"sql_row_cap": 1234, "sql_timeout_s": 300, "max_concurrent_runs": None,
                            "operators_run_in_prod": False}


def test_saving_changes_the_workspace_and_audits_before_and_after(world):
    response = world.client("admin").post(SETTINGS, VALID, follow=True)
    assert shown(response) == ["Saved: SQL row cap, SQL timeout (seconds), Concurrent runs, "
                               "Operators may trigger runs in prod."]
    ws = Workspace.objects.get(pk=world.workspace.pk)
    assert (ws.sql_row_cap, ws.sql_timeout_s, ws.max_concurrent_runs, ws.operators_run_in_prod) == (5000, 60, 3, True)
    event = AuditEvent.objects.get(action="workspace.settings")
    assert event.before == {"sql_row_cap": 1_000_000, "sql_timeout_s": 300, "max_concurrent_runs": None,
                            "operators_run_in_prod": False}
    assert event.after == {"sql_row_cap": 5000, "sql_timeout_s": 60, "max_concurrent_runs": 3,
                           "operators_run_in_prod": True}
    assert event.actor_label == "admin" and event.target_id == str(ws.pk)
    # Only what changed is recorded; saving the same values records nothing.
    again = world.client("admin").post(SETTINGS, {**VALID, "max_concurrent_runs": "", "operators_run_in_prod": ""},
                                       follow=True)
    assert shown(again) == ["Saved: Concurrent runs, Operators may trigger runs in prod."]
    latest = AuditEvent.objects.filter(action="workspace.settings").latest("id")
    assert latest.after == {"max_concurrent_runs": None, "operators_run_in_prod": False}
    assert shown(world.client("admin").post(SETTINGS, {**VALID, "max_concurrent_runs": ""}, follow=True)) \
        == ["Saved: Operators may trigger runs in prod."]
    world.client("admin").post(SETTINGS, {**VALID, "max_concurrent_runs": ""})
    assert AuditEvent.objects.filter(action="workspace.settings").count() == 3


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sql_row_cap", str(10**40), f"less than or equal to {SQL_ROW_CAP_MAX}"),
    ("sql_row_cap", "0", "greater than or equal to 1"),
    ("sql_row_cap", "-5", "greater than or equal to 1"),
    ("sql_row_cap", "", "This field is required"),
    ("sql_timeout_s", "86401", "less than or equal to 86400"),
    ("sql_timeout_s", "1.5", "Enter a whole number"),
    ("max_concurrent_runs", "1" * 5000, "Enter a whole number"),
    ("max_concurrent_runs", "1001", "less than or equal to 1000"),
    ("max_concurrent_runs", "abc", "Enter a whole number"),
])
def test_out_of_range_values_are_form_errors(world, field, value, message):
    response = world.client("admin").post(SETTINGS, {**VALID, field: value})
    assert response.status_code == 200 and message in " ".join(response.context["form"].errors[field])
    assert message.split(" ")[0] in response.content.decode()
    ws = Workspace.objects.get(pk=world.workspace.pk)
    assert ws.sql_row_cap == 1_000_000 and not AuditEvent.objects.filter(action="workspace.settings").exists()


def test_the_service_checks_ranges_and_role_too(world):
    with pytest.raises(ServiceError, match="from 1 to"):
        workspace_settings_update(access=world.access("admin"), sql_row_cap=10**40, sql_timeout_s=60,
                                  max_concurrent_runs=None, operators_run_in_prod=False)
    with pytest.raises(ServiceError, match="from 1 to"):
        workspace_settings_update(access=world.access("admin"), sql_row_cap=True, sql_timeout_s=60,
                                  max_concurrent_runs=None, operators_run_in_prod=False)
    assert world.client("operator").post(SETTINGS, VALID).status_code == 403
    assert world.client("outsider").post(SETTINGS, VALID).status_code == 404
    assert Workspace.objects.get(pk=world.workspace.pk).sql_row_cap == 1_000_000


def test_the_prod_rule_takes_effect(world, demo_job):
    """An operator may trigger a prod run only once the setting lets them."""
    url = "/w/acme/jobs/medallion/trigger/"
    refused = world.client("operator").post(url, {"environment": "prod"})
    assert refused.status_code in (302, 403)
    assert not Run.objects.filter(environment__name="prod").exists()
    world.client("admin").post(SETTINGS, VALID)
    world.client("operator").post(url, {"environment": "prod"})
    assert Run.objects.filter(environment__name="prod").count() == 1
