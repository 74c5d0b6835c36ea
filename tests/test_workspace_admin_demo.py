"""The demo user that ``make run`` prints (``seed_demo``) administers the demo workspace: they
reach the members, audit, settings and token pages, and stay admin across re-seeding."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from controlroom.models import AuditEvent, Membership, Role

pytestmark = pytest.mark.django_db
PAGES = ("/w/demo/settings/members/", "/w/demo/settings/audit/", "/w/demo/settings/",
         "/w/demo/settings/audit/export.csv", "/w/demo/tokens/")


def seed(**options) -> tuple[str, str]:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    username, password = re.search(r"Sign in as (\S+) / (\S+)", out.getvalue()).groups()
    return username, password


def test_the_printed_demo_user_is_a_workspace_admin(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    username, password = seed()
    client = Client()
    assert client.login(username=username, password=password)
    for url in PAGES:
        assert client.get(url).status_code == 200, url
    invited = client.post(PAGES[0], {"action": "invite", "invite-username": "guest", "invite-role": "viewer"})
    assert invited.context["invited"][0] == "guest"


def test_reseeding_keeps_or_restores_the_admin_role(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    username, _ = seed()
    events = AuditEvent.objects.count()
    seed()
    assert AuditEvent.objects.count() == events  # idempotent: nothing to record
    Membership.objects.filter(user__username=username).update(role=Role.VIEWER)
    seed()
    assert Membership.objects.get(user__username=username, workspace__slug="demo").role == Role.ADMIN
    # Seeding for another username makes that user an admin of the existing demo workspace too.
    other, _ = seed(username="second")
    assert other == "second"
    assert Membership.objects.get(user=get_user_model().objects.get(username="second")).role == Role.ADMIN
