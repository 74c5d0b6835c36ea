"""Every write through the admin site is audited: the real admin pages, a superuser, and for each
change an event with before and after on the right chain (URLs without their credentials); the
chains still verify. Staff change their own password on allauth's page, not the admin's."""

import json

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.forms import MultiWidget, inlineformset_factory
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from connections.models import Connection, SecretRef
from controlroom import admin_services
from controlroom.admin_audit import AuditedAdminMixin
from controlroom.audit import audit_verify_all
from controlroom.models import ApiToken, AuditEvent, Membership, Workspace
from controlroom.services import api_token_create
from runs.models import GitSource
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
READ_ONLY_ADMINS = {"controlroom.AuditEvent"}  # it cannot write, so there is nothing to audit


@pytest.fixture
def root(world):
    return get_user_model().objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def staff(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def admin_url(obj, view: str = "change") -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_{view}", args=[obj.pk])


def change_form_data(client: Client, obj) -> dict:
    """What the change page would post back untouched: each field's current value as the widget
    would send it (split date-times as _0 and _1, JSON as text, booleans only when set)."""
    form = client.get(admin_url(obj)).context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = field.prepare_value(form[name].value())
        if isinstance(field.widget, MultiWidget):
            for i, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{i}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, (list, tuple)):
            data[name] = [str(v) for v in value]
        elif value is not None:
            data[name] = value
    return data


def save_change(client: Client, obj, **changes) -> AuditEvent:
    response = client.post(admin_url(obj), {**change_form_data(client, obj), **changes})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    return AuditEvent.objects.filter(target_type=type(obj).__name__.lower(), target_id=str(obj.pk)).latest("id")


def assert_chains_verify():
    assert [verdict for verdict in audit_verify_all() if not verdict.ok] == []


def test_every_registered_admin_is_audited():
    unaudited = [model._meta.label for model, model_admin in admin.site._registry.items()
                 if not isinstance(model_admin, AuditedAdminMixin) and model._meta.label not in READ_ONLY_ADMINS]
    assert unaudited == []


def test_changing_a_membership_role_is_audited_on_its_workspace_chain(world, root, staff):
    membership = Membership.objects.get(workspace=world.workspace, user=world.users["viewer"])
    untouched = AuditEvent.objects.count()
    assert staff.post(admin_url(membership), change_form_data(staff, membership)).status_code == 302
    assert AuditEvent.objects.count() == untouched  # saved without a change: nothing to record
    event = save_change(staff, membership, role="admin")
    assert event.action == "admin.change" and event.workspace == world.workspace
    assert (event.before["role"], event.after["role"]) == ("viewer", "admin")
    assert event.actor_user_id == root.pk and event.actor_label == "root"
    assert_chains_verify()


def test_revoking_a_token_in_the_admin_is_audited_without_its_hash(world, staff):
    token, _ = api_token_create(access=world.access("admin"), name="ci", role="operator")
    event = save_change(staff, token, revoked_at_0="2030-01-02", revoked_at_1="03:04:05")
    assert event.before["revoked_at"] is None and event.after["revoked_at"].startswith("2030-01-02T03:04:05")
    assert event.before["token_hash"] == event.after["token_hash"] == "[redacted]"
    assert token.token_hash not in json.dumps([event.before, event.after])
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert_chains_verify()


def test_changing_a_connection_and_a_secret_reference_is_audited(world, staff):
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    event = save_change(staff, connection, config=json.dumps({"database": "other.duckdb"}))
    assert event.before["config"] == {"database": "warehouse.duckdb"} and event.after["config"] == {
        "database": "other.duckdb"}
    ref = SecretRef.objects.create(workspace=world.workspace, name="pw", source="env", locator="CONTROLROOM_SECRET_A")
    event = save_change(staff, ref, locator="CONTROLROOM_SECRET_B")
    assert (event.before["locator"], event.after["locator"]) == ("CONTROLROOM_SECRET_A", "CONTROLROOM_SECRET_B")
    assert event.workspace == world.workspace
    assert_chains_verify()


def test_changing_workspace_limits_is_audited(world, staff):
    event = save_change(staff, world.workspace, max_concurrent_runs="3", sql_row_cap="500")
    assert event.workspace == world.workspace and event.action == "admin.change"
    assert (event.before["max_concurrent_runs"], event.after["max_concurrent_runs"]) == (None, 3)
    assert (event.before["sql_row_cap"], event.after["sql_row_cap"]) == (1_000_000, 500)
    assert_chains_verify()


def test_a_failed_audit_rolls_the_admin_change_back(world, staff, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr(admin_services, "audit_record", broken)
    membership = Membership.objects.get(workspace=world.workspace, user=world.users["viewer"])
    data = {**change_form_data(staff, membership), "role": "admin"}
    with pytest.raises(RuntimeError, match="audit store down"):
        staff.post(admin_url(membership), data)
    assert Membership.objects.get(pk=membership.pk).role == "viewer"


def test_changing_a_password_in_the_admin_is_audited_without_the_hash(world, root, staff):
    user = world.users["analyst"]
    old_hash = user.password
    url = reverse("admin:auth_user_password_change", args=[user.pk])
    new_password = "a-new-Passw0rd-9"
    response = staff.post(url, {"usable_password": "true", "password1": new_password, "password2": new_password})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="admin.password")
    user.refresh_from_db()
    assert event.workspace is None and event.target_id == str(user.pk) and event.actor_user_id == root.pk
    assert (event.before["password"], event.after["password"]) == ("[redacted]", "[redacted, changed]")
    assert old_hash not in json.dumps(event.before) and user.password not in json.dumps(event.after)
    assert Client().login(username="analyst", password=new_password)
    assert_chains_verify()


def test_granting_staff_and_a_group_is_audited(world, staff):
    group = Group.objects.create(name="auditors")
    user = world.users["viewer"]
    data = {**change_form_data(staff, user), "is_staff": "on", "groups": [str(group.pk)]}
    assert staff.post(admin_url(user), data).status_code == 302
    events = list(AuditEvent.objects.filter(action="admin.change", target_type="user", target_id=str(user.pk)))
    assert any(e.before["is_staff"] is False and e.after["is_staff"] is True for e in events)
    assert any(e.before["groups"] == [] and e.after["groups"] == [group.pk] for e in events)
    assert all(e.after["password"] == "[redacted]" for e in events)
    assert_chains_verify()


def test_deleting_through_the_delete_page_is_audited(world, staff):
    ref = SecretRef.objects.create(workspace=world.workspace, name="old", source="env", locator="CONTROLROOM_SECRET_A")
    ref_id = ref.pk
    assert staff.post(admin_url(ref, "delete"), {"post": "yes"}).status_code == 302
    event = AuditEvent.objects.get(action="admin.delete", target_type="secretref")
    assert event.target_id == str(ref_id) and event.workspace == world.workspace
    assert event.before["locator"] == "CONTROLROOM_SECRET_A" and event.after is None
    assert not SecretRef.objects.filter(pk=ref_id).exists()
    assert_chains_verify()


def test_bulk_delete_records_one_event_per_object(world, staff):
    memberships = list(Membership.objects.filter(workspace=world.workspace, role__in=["viewer", "analyst"]))
    response = staff.post(reverse("admin:controlroom_membership_changelist"), {
        "action": "delete_selected", "_selected_action": [str(m.pk) for m in memberships], "post": "yes"})
    assert response.status_code == 302
    events = AuditEvent.objects.filter(action="admin.delete", target_type="membership")
    assert sorted(e.target_id for e in events) == sorted(str(m.pk) for m in memberships)
    assert {e.before["role"] for e in events} == {"viewer", "analyst"}
    assert all(e.workspace == world.workspace for e in events)
    assert not Membership.objects.filter(pk__in=[m.pk for m in memberships]).exists()
    assert_chains_verify()


def test_deleting_a_user_in_the_log_records_what_went_with_them(world, demo_job, staff):
    operator = world.users["operator"]
    operator_id = operator.pk
    assert staff.post(admin_url(operator, "delete"), {"post": "yes"}).status_code == 302
    event = AuditEvent.objects.get(action="admin.delete", target_type="user")
    assert event.target_id == str(operator_id) and event.workspace is None
    assert event.after == {"deleted_with": {"controlroom.Membership": 1}}
    assert event.before["username"] == "operator" and event.before["password"] == "[redacted]"
    assert AuditEvent.objects.get(action="job.create").actor_user_id == operator_id
    assert_chains_verify()


def test_an_action_that_updates_rows_directly_is_audited(world, staff):
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="tick", task="runs.tasks.reap_expired_leases", interval=every)
    response = staff.post(reverse("admin:django_celery_beat_periodictask_changelist"), {
        "action": "disable_tasks", "_selected_action": [str(task.pk)]})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="admin.action.disable_tasks")
    assert (event.before["enabled"], event.after["enabled"]) == (True, False) and event.workspace is None
    assert_chains_verify()


def test_inline_rows_are_audited_one_by_one(world, root):
    # No admin of ours has a writable inline today; this is what the mixin's save_formset runs.
    formset_class = inlineformset_factory(Workspace, Membership, fields=("user", "role"), extra=1)
    existing = {m.user.username: m for m in world.workspace.memberships.select_related("user")}
    prefix = "memberships"
    data = {f"{prefix}-TOTAL_FORMS": str(len(existing) + 1), f"{prefix}-INITIAL_FORMS": str(len(existing)),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    for i, membership in enumerate(existing.values()):
        data.update({f"{prefix}-{i}-id": str(membership.pk), f"{prefix}-{i}-user": str(membership.user_id),
                     f"{prefix}-{i}-role": membership.role, f"{prefix}-{i}-workspace": str(world.workspace.pk)})
        if membership.user.username == "viewer":
            data[f"{prefix}-{i}-role"] = "operator"
        if membership.user.username == "analyst":
            data[f"{prefix}-{i}-DELETE"] = "on"
    new = len(existing)
    data.update({f"{prefix}-{new}-user": str(world.users["outsider"].pk), f"{prefix}-{new}-role": "viewer",
                 f"{prefix}-{new}-workspace": str(world.workspace.pk)})
    formset = formset_class(data, instance=world.workspace, prefix=prefix)
    assert formset.is_valid(), formset.errors
    admin_services.admin_formset_save(actor=root, formset=formset)
    actions = {(e.action, e.before and e.before["role"], e.after and e.after["role"])
               for e in AuditEvent.objects.filter(target_type="membership", action__startswith="admin.")}
    assert actions == {("admin.change", "viewer", "operator"), ("admin.delete", "analyst", None),
                       ("admin.add", None, "viewer")}
    assert_chains_verify()


def test_a_change_past_the_recorded_length_is_still_seen(world, demo_job, staff):
    demo_job.description = "x" * 3000
    demo_job.save()
    event = save_change(staff, demo_job, description="x" * 2500 + "y" * 500)
    before, after = event.before["description"], event.after["description"]
    assert before["truncated"] == after["truncated"] == "x" * 2000 and before["length"] == after["length"] == 3000
    assert before["sha256"] != after["sha256"]


def test_a_workspace_added_in_the_admin_gets_its_environments_and_tokens_are_made_elsewhere(world, staff):
    response = staff.post(reverse("admin:controlroom_workspace_add"), {
        "slug": "beta", "name": "Beta", "sql_row_cap": "1000", "sql_timeout_s": "60"})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    beta = Workspace.objects.get(slug="beta")
    assert sorted(beta.environments.values_list("name", flat=True)) == ["dev", "prod", "stage"]
    assert AuditEvent.objects.filter(workspace=beta, action="admin.add").exists()
    # A token's value is shown once on the workspace's token page; the admin cannot mint one without it.
    assert staff.get(reverse("admin:controlroom_apitoken_add")).status_code == 403
    assert_chains_verify()


def test_a_token_in_a_url_is_not_recorded(world, staff):
    secret = "ghp_SUPERSECRET123"
    response = staff.post(reverse("admin:runs_gitsource_add"), {
        "workspace": str(world.workspace.pk), "url": f"https://x-access-token:{secret}@github.com/o/r.git",
        "branch": "main", "folder": "jobs"})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    source = GitSource.objects.get(workspace=world.workspace)
    assert secret in source.url  # the source keeps it: git needs it
    event = AuditEvent.objects.get(action="admin.add", target_type="gitsource")
    assert event.after["url"] == "https://github.com/o/r.git" and event.workspace == world.workspace
    event = save_change(staff, source, url=f"https://{secret}@github.com/o/other.git")  # a bare token too
    assert (event.before["url"], event.after["url"]) == ("https://github.com/o/r.git", "https://github.com/o/other.git")
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    event = save_change(staff, connection, config=json.dumps({"database": "w.duckdb", "attach": [
        f"see postgresql://app:{secret}@db/x"]}))  # any text, nested too, any scheme with a password
    assert event.after["config"] == {"database": "w.duckdb", "attach": ["see postgresql://db/x"]}
    assert not AuditEvent.objects.filter(after__icontains=secret).exists()
    assert secret not in json.dumps([[e.before, e.after] for e in AuditEvent.objects.all()])
    assert_chains_verify()


@pytest.fixture
def fresh_cache():
    cache.clear()  # allauth's rate limits count in the shared cache, which outlives a test
    yield
    cache.clear()


def test_staff_change_their_password_on_the_limited_audited_page(root, staff, fresh_cache):
    # The admin's own form checked the old password without a limit and recorded nothing.
    for url in ("/admin/password_change/", "/admin/password_change/done/"):
        answer = staff.get(url)
        assert answer.status_code == 302 and answer["Location"] == reverse("account_change_password")
    guess = {"old_password": "wrong-0", "new_password1": "Another-passw0rd-9", "new_password2": "Another-passw0rd-9"}
    assert staff.post("/admin/password_change/", guess).status_code == 302
    assert Client().login(username="root", password=PASSWORD)  # nothing changed
    # allauth's page lets 5 attempts a minute through, then answers 429.
    answers = [staff.post(reverse("account_change_password"), {
        "oldpassword": f"wrong-{i}", "password1": "Another-passw0rd-9", "password2": "Another-passw0rd-9"}).status_code
        for i in range(7)]
    assert answers == [200] * 5 + [429] * 2
    cache.clear()
    changed = staff.post(reverse("account_change_password"), {
        "oldpassword": PASSWORD, "password1": "Another-passw0rd-9", "password2": "Another-passw0rd-9"})
    assert changed.status_code == 302
    event = AuditEvent.objects.get(action="auth.password_change")
    assert event.actor_user_id == root.pk and event.workspace is None
    assert_chains_verify()
