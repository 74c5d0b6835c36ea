"""The members page (controlroom/workspace_admin): invite with a password shown once, add an
existing user, change roles, remove; the last admin stays; every change audited; ids of
another workspace's members are 404."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlroom.audit import audit_verify
from controlroom.models import AuditEvent, Membership, Role
from controlroom.services import ServiceError
from controlroom.workspace_admin.services import LAST_ADMIN, member_remove, member_role_change

pytestmark = pytest.mark.django_db
MEMBERS = "/w/acme/settings/members/"


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def member(world, persona: str) -> Membership:
    return Membership.objects.get(workspace=world.workspace, user=world.users[persona])


def test_invite_creates_a_user_whose_password_is_shown_once_and_works(world):
    client = world.client("admin")
    response = client.post(MEMBERS, {"action": "invite", "invite-username": "newbie",
                                     "invite-email": "newbie@example.com", "invite-role": "analyst"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    username, password = response.context["invited"]
    assert username == "newbie" and password in response.content.decode()
    user = get_user_model().objects.get(username="newbie")
    assert user.email == "newbie@example.com" and user.check_password(password)
    assert Membership.objects.get(workspace=world.workspace, user=user).role == Role.ANALYST
    assert password not in client.get(MEMBERS).content.decode()
    assert Client().login(username="newbie", password=password)
    invite = AuditEvent.objects.get(workspace=world.workspace, action="membership.invite")
    assert invite.after == {"user": "newbie", "email": "newbie@example.com", "role": "analyst"}
    assert invite.actor_label == "admin"
    created = AuditEvent.objects.get(workspace=None, action="user.create")
    assert created.target_id == str(user.pk) and password not in str(created.after) + str(invite.after)


def test_invite_refuses_a_taken_or_bad_username_with_a_message(world):
    client = world.client("admin")
    for username, message in (("Viewer", "already exists"), ("has space", "only letters"), ("", "required")):
        response = client.post(MEMBERS, {"action": "invite", "invite-username": username, "invite-role": "viewer"})
        assert response.status_code == 200 and message in response.content.decode(), username
    bad_role = client.post(MEMBERS, {"action": "invite", "invite-username": "x", "invite-role": "owner"})
    assert "Select a valid choice" in bad_role.content.decode()
    assert not get_user_model().objects.filter(username__in=("has space", "x")).exists()
    assert not AuditEvent.objects.filter(action__in=("membership.invite", "user.create")).exists()


def test_add_an_existing_user_by_username(world):
    get_user_model().objects.create_user(username="carol", password="x" * 20)
    client = world.client("admin")
    response = client.post(MEMBERS, {"action": "add", "add-username": "CAROL", "add-role": "operator"}, follow=True)
    assert "carol joined as operator." in shown(response)
    assert Membership.objects.get(workspace=world.workspace, user__username="carol").role == Role.OPERATOR
    event = AuditEvent.objects.get(action="membership.add")
    assert event.after == {"user": "carol", "role": "operator"} and event.workspace == world.workspace
    again = client.post(MEMBERS, {"action": "add", "add-username": "carol", "add-role": "viewer"})
    assert "already a member" in again.content.decode()
    nobody = client.post(MEMBERS, {"action": "add", "add-username": "nobody", "add-role": "viewer"})
    assert "There is no user named nobody" in nobody.content.decode()


def test_change_role_and_remove_are_audited(world):
    client = world.client("admin")
    viewer = member(world, "viewer")
    response = client.post(f"{MEMBERS}{viewer.pk}/role/", {"role": "operator"}, follow=True)
    assert "viewer is now operator." in shown(response)
    viewer.refresh_from_db()
    assert viewer.role == Role.OPERATOR
    change = AuditEvent.objects.get(action="membership.role_change")
    assert change.before == {"user": "viewer", "role": "viewer"} and change.after == {"user": "viewer",
                                                                                      "role": "operator"}
    response = client.post(f"{MEMBERS}{viewer.pk}/remove/", follow=True)
    assert "viewer is no longer a member of Acme." in shown(response)
    assert not Membership.objects.filter(pk=viewer.pk).exists()
    assert get_user_model().objects.filter(username="viewer").exists()  # the account stays
    removed = AuditEvent.objects.get(action="membership.remove")
    assert removed.before == {"user": "viewer", "role": "operator"} and removed.target_id == str(viewer.pk)
    assert world.client("viewer").get("/w/acme/jobs/").status_code == 404
    assert audit_verify(workspace=world.workspace).ok


def test_the_last_admin_can_be_neither_demoted_nor_removed(world):
    client = world.client("admin")
    admin = member(world, "admin")
    events = AuditEvent.objects.count()
    demote = client.post(f"{MEMBERS}{admin.pk}/role/", {"role": "operator"}, follow=True)
    assert LAST_ADMIN in shown(demote) and LAST_ADMIN in demote.content.decode()
    remove = client.post(f"{MEMBERS}{admin.pk}/remove/", follow=True)
    assert LAST_ADMIN in shown(remove)
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN and AuditEvent.objects.count() == events
    with pytest.raises(ServiceError, match="at least one admin"):
        member_role_change(access=world.access("admin"), membership_id=admin.pk, role=Role.VIEWER)
    with pytest.raises(ServiceError, match="at least one admin"):
        member_remove(access=world.access("admin"), membership_id=admin.pk)


def test_with_a_second_admin_one_may_step_down(world):
    client = world.client("admin")
    operator = member(world, "operator")
    client.post(f"{MEMBERS}{operator.pk}/role/", {"role": "admin"})
    response = client.post(f"{MEMBERS}{member(world, 'admin').pk}/role/", {"role": "viewer"})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert member(world, "admin").role == Role.VIEWER
    # Now the operator-turned-admin is the last one.
    last = world.client("operator").post(f"{MEMBERS}{operator.pk}/remove/", follow=True)
    assert LAST_ADMIN in shown(last) and member(world, "operator").role == Role.ADMIN


def test_another_workspaces_member_id_is_404(world):
    theirs = Membership.objects.get(workspace=world.other, user=world.users["outsider"])
    client = world.client("admin")
    assert client.post(f"{MEMBERS}{theirs.pk}/role/", {"role": "viewer"}).status_code == 404
    assert client.post(f"{MEMBERS}{theirs.pk}/remove/").status_code == 404
    for bad in ("99999999999999999999999", "abc", "0", "-1"):
        assert client.post(f"{MEMBERS}{bad}/remove/").status_code == 404, bad
    theirs.refresh_from_db()
    assert theirs.role == Role.ADMIN
    # Their admin reaching into acme is 404 too, and members below admin are 403.
    own = member(world, "viewer")
    assert world.client("outsider").post(f"{MEMBERS}{own.pk}/remove/").status_code == 404
    assert world.client("operator").post(f"{MEMBERS}{own.pk}/remove/").status_code == 403
    assert world.client("operator").post(MEMBERS, {"action": "add", "add-username": "outsider",
                                                   "add-role": "admin"}).status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="membership.").exists()


def test_members_page_lists_roles_in_few_queries(world, django_assert_max_num_queries):
    for i in range(30):
        Membership.objects.create(workspace=world.workspace, role=Role.VIEWER,
                                  user=get_user_model().objects.create_user(username=f"m{i:02}"))
    client = world.client("admin")
    with django_assert_max_num_queries(8):
        response = client.get(MEMBERS)
    body = response.content.decode()
    assert "m29" in body and 'data-username="operator"' in body and "(you)" in body
    assert "outsider" not in body


@pytest.mark.django_db(transaction=True)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(world, monkeypatch):
    """The admin count is taken with the workspace row locked: the second demotion waits for the
    first to commit, then sees one admin left and is refused (without the lock both would pass)."""
    import threading
    import time

    from django.db import connection

    from controlroom.workspace_admin import services

    operator = member(world, "operator")
    Membership.objects.filter(pk=operator.pk).update(role=Role.ADMIN)
    admin = member(world, "admin")
    counted = services._admins_locked

    def slow_count(workspace):
        admins = counted(workspace)
        time.sleep(0.3)  # both would have counted two admins by now, were the count not locked
        return admins

    monkeypatch.setattr(services, "_admins_locked", slow_count)
    barrier, outcomes = threading.Barrier(2), []

    def demote(persona: str, target: Membership) -> None:
        barrier.wait()
        try:
            member_role_change(access=world.access(persona), membership_id=target.pk, role=Role.VIEWER)
            outcomes.append("demoted")
        except ServiceError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=("admin", operator)),
               threading.Thread(target=demote, args=("operator", admin))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == sorted(["demoted", LAST_ADMIN])
    assert Membership.objects.filter(workspace=world.workspace, role=Role.ADMIN).count() == 1
