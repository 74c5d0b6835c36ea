"""Single sign-on (controlroom/sso.py): users made at first sign-on with an engine-fit, stable
username; memberships that follow the IdP's groups through each workspace's mappings (added,
changed, removed, audited; hand-made ones kept); a page for someone whose groups map to
nothing; SSO-only mode with a break-glass account. The browser test signs in through a real
OpenID Connect provider (node-oidc-provider, tests/oidc_server.py) in Chromium."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from controlroom.models import AuditEvent, IdpGroupMapping, Membership
from controlroom.sso import engine_username, groups_of, memberships_sync

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("preferred", "expected"), [
    ("alice", "alice"), ("Alice.Smith@corp", "Alice.Smith@corp"), ("ana maría", "ana-mar-a"),
    ("-xyz", "xyz"), ("-x", None), ("", None), ("ünï", None), ("a" * 80, "a" * 50),
])
def test_usernames_fit_the_engines_identity_rules(preferred, expected):
    name = engine_username(preferred, "subject-1")
    assert name == expected if expected else name.startswith("sso-") and len(name) == 14
    import re

    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}", name)  # compose/trino/rules.json's pattern


def test_groups_come_from_the_configured_claim(settings):
    data = {"id_token": {"groups": ["/eng/data", "ops"]}, "userinfo": {"groups": "analysts", "roles": ["x"]}}
    assert groups_of(data) == ["/eng/data", "analysts", "eng/data", "ops"]
    settings.OIDC_GROUPS_CLAIM = "roles"
    assert groups_of(data) == ["x"]
    assert groups_of({}) == []


def test_memberships_follow_groups_and_hand_made_ones_stay(world):
    user = get_user_model().objects.create_user(username="sam")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="analysts", role="analyst")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="ops", role="operator")
    IdpGroupMapping.objects.create(workspace=world.other, group="analysts", role="viewer")

    changes = memberships_sync(user, ["analysts", "unmapped"])
    assert {(c["workspace"], c["before"], c["after"]) for c in changes} == {("acme", None, "analyst"),
                                                                             ("other", None, "viewer")}
    roles = lambda: {(m.workspace.slug, m.role, m.source) for m in Membership.objects.filter(user=user)}  # noqa: E731
    assert roles() == {("acme", "analyst", "idp"), ("other", "viewer", "idp")}
    assert memberships_sync(user, ["analysts"]) == []  # nothing to change: nothing audited

    memberships_sync(user, ["analysts", "ops"])  # the highest role of the mapped groups
    assert roles() == {("acme", "operator", "idp"), ("other", "viewer", "idp")}
    audit = AuditEvent.objects.filter(action="membership.sso_sync", workspace=world.workspace).order_by("pk").last()
    assert audit.before == {"role": "analyst"} and audit.after == {"role": "operator", "groups": ["analysts", "ops"]}

    Membership.objects.filter(user=user, workspace=world.other).update(source="manual", role="admin")  # by hand
    memberships_sync(user, [])
    assert roles() == {("other", "admin", "manual")}  # the group-made one went, the hand-made one stayed
    assert AuditEvent.objects.filter(action="membership.sso_sync", workspace=world.workspace).order_by(
        "pk").last().after == {"role": None, "groups": []}


def test_a_role_changed_by_hand_is_kept_from_then_on(world):
    user = get_user_model().objects.create_user(username="kim")
    IdpGroupMapping.objects.create(workspace=world.workspace, group="analysts", role="analyst")
    memberships_sync(user, ["analysts"])
    membership = Membership.objects.get(user=user, workspace=world.workspace)
    response = world.client("admin").post(f"/w/acme/settings/members/{membership.pk}/role/", {"role": "operator"})
    assert response.status_code == 302
    memberships_sync(user, [])
    membership.refresh_from_db()
    assert (membership.role, membership.source) == ("operator", "manual")


def test_sso_only_refuses_passwords_but_the_break_glass_account(world, settings):
    settings.SSO_ONLY, settings.SSO_BREAK_GLASS_USER = True, "admin"
    for name in ("analyst", "admin"):
        user = world.users[name]
        user.set_password("a-long-password-1")
        user.save()
    refused = Client().post("/accounts/login/", {"login": "analyst", "password": "a-long-password-1"})
    assert refused.status_code == 200 and "Passwords are off here" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session
    admin_site = Client().post("/admin/login/", {"username": "analyst", "password": "a-long-password-1"})
    assert "_auth_user_id" not in admin_site.wsgi_request.session
    allowed = Client().post("/accounts/login/?local=1", {"login": "admin", "password": "a-long-password-1"})
    assert allowed.status_code == 302 and allowed.wsgi_request.session["_auth_user_id"] == str(world.users["admin"].pk)
    page = Client().get("/accounts/login/").content.decode()
    assert 'name="password"' not in page  # only the IdP's button (none configured in this test)
    assert 'name="password"' in Client().get("/accounts/login/?local=1").content.decode()


def test_identity_groups_page_maps_and_unmaps_with_audit(world):
    admin = world.client("admin")
    assert admin.post("/w/acme/settings/groups/", {"group": "data-analysts", "role": "analyst"}).status_code == 302
    page = admin.get("/w/acme/settings/groups/").content.decode()
    assert "<code>data-analysts</code>" in page and "analyst" in page
    again = admin.post("/w/acme/settings/groups/", {"group": "data-analysts", "role": "viewer"}, follow=True)
    assert "already mapped" in again.content.decode()
    mapping = IdpGroupMapping.objects.get(workspace=world.workspace)
    admin.post("/w/acme/settings/groups/", {"remove": str(mapping.pk)})
    assert not IdpGroupMapping.objects.exists()
    actions = AuditEvent.objects.filter(action__startswith="idp_group.").order_by("pk").values_list("action", flat=True)
    assert list(actions) == ["idp_group.map", "idp_group.unmap"]
    assert world.client("operator").get("/w/acme/settings/groups/").status_code == 403
