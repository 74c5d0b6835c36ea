"""The workspace admin pages in Chromium (served by pytest-django's live server), as the admin:
invite a member and copy their password, change their role, fail to remove the last admin,
filter the audit log, verify its chain, a settings error, and copy a new API token. Each page
is photographed to ``/tmp/workspace-admin-*.png``."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from controlroom.models import AuditEvent, Membership, Role
from controlroom.workspace_admin.services import LAST_ADMIN
from tests.chromium import chromium

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SHOTS = "/tmp/workspace-admin-{}.png"


def message(page: Page, text: str) -> None:
    expect(page.locator(".messages li", has_text=text)).to_be_visible()


def test_admin_manages_members_audit_settings_and_tokens(world, live_server, client):
    client.force_login(world.users["admin"])
    cookie = client.cookies["sessionid"].value
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      permissions=["clipboard-read", "clipboard-write"])
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text)
                if msg.type == "error" and "Failed to load resource" not in msg.text else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.goto(f"{live_server.url}/w/acme/jobs/")
        page.get_by_role("link", name="Admin", exact=True).click()
        expect(page.locator("h1")).to_have_text("Members of Acme")
        page.screenshot(path=SHOTS.format("members"), full_page=True)

        invite = page.locator("#invite-form")
        invite.get_by_label("Username").fill("dana")
        invite.get_by_label("E-mail (optional)").fill("dana@example.com")
        invite.get_by_label("Role").select_option("analyst")
        invite.get_by_role("button", name="Invite").click()
        message(page, "dana joined as analyst.")
        password = page.locator("#invited-password").inner_text().strip()
        assert len(password) >= 16
        page.locator("#invited").get_by_role("button", name="Copy").click()
        expect(page.locator("#invited").get_by_role("button")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == password
        page.screenshot(path=SHOTS.format("invited"), full_page=True)

        dana = page.locator('tr[data-username="dana"]')
        dana.get_by_label("Role of dana").select_option("operator")
        dana.get_by_role("button", name="Change role").click()
        message(page, "dana is now operator.")
        expect(page.locator('tr[data-username="dana"] select')).to_have_value("operator")

        page.locator('tr[data-username="admin"]').get_by_role("button", name="Remove").click()
        message(page, LAST_ADMIN)
        expect(page.locator(".messages li.error")).to_have_text(LAST_ADMIN)
        expect(page.locator('tr[data-username="admin"]')).to_be_visible()
        page.screenshot(path=SHOTS.format("last-admin"), full_page=True)

        page.locator("nav.subnav").get_by_role("link", name="Audit log").click()
        page.get_by_label("Action").fill("membership.")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("#audit-events > tbody > tr[data-event]")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("membership.role_change")
        expect(rows.nth(0).locator("del")).to_have_text("analyst")
        expect(rows.nth(0).locator("ins")).to_have_text("operator")
        expect(rows.nth(1)).to_contain_text("membership.invite")
        page.screenshot(path=SHOTS.format("audit"), full_page=True)
        page.get_by_label("From").fill("not a date")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#filter-error")).to_have_text("From: Enter a valid date/time.")

        page.get_by_label("From").fill("")
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("button", name="Verify chain").click()
        message(page, "Audit chain verified:")
        assert "action=membership." in page.url  # the filters survive the verification
        expect(rows).to_have_count(2)
        page.screenshot(path=SHOTS.format("verified"), full_page=True)

        page.locator("nav.subnav").get_by_role("link", name="Settings").click()
        page.get_by_label("SQL row cap").fill(str(10**40))
        page.get_by_label("Operators may trigger runs in prod").check()
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator("#settings-form .errorlist")).to_contain_text("less than or equal to 50000000")
        page.screenshot(path=SHOTS.format("settings-error"), full_page=True)
        page.get_by_label("SQL row cap").fill("250000")
        page.get_by_role("button", name="Save settings").click()
        message(page, "Saved: SQL row cap, Operators may trigger runs in prod.")
        page.screenshot(path=SHOTS.format("settings"), full_page=True)

        page.locator("nav.subnav").get_by_role("link", name="Identity groups").click()
        page.get_by_label("Group").fill("data-analysts")
        page.locator('select[name="role"]').select_option("analyst")
        page.get_by_role("button", name="Map group").click()
        expect(page.locator("#group-mappings")).to_contain_text("data-analysts")
        page.screenshot(path=SHOTS.format("groups"), full_page=True)

        page.locator("nav.subnav").get_by_role("link", name="API tokens").click()
        page.get_by_label("Name").fill("ci")
        page.get_by_label("Expires").select_option("30")
        page.locator('input[name="scopes"][value="executor"]').check()  # beside the CI defaults
        page.get_by_role("button", name="Create token").click()
        expect(page.locator("td.scope-list").first).to_have_text("runs:read runs:write executor")
        value = page.locator("#new-token").inner_text().strip()
        assert value.startswith("crt_")
        page.locator("#copy-token").click()
        expect(page.locator("#copy-token")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == value
        page.screenshot(path=SHOTS.format("tokens"), full_page=True)
        context.close()
    assert not problems, problems
    dana = get_user_model().objects.get(username="dana")
    assert dana.check_password(password)
    assert Membership.objects.get(workspace=world.workspace, user=dana).role == Role.OPERATOR
    assert Membership.objects.get(workspace=world.workspace, user=world.users["admin"]).role == Role.ADMIN
    assert world.workspace.__class__.objects.get(pk=world.workspace.pk).sql_row_cap == 250_000
    assert list(AuditEvent.objects.filter(workspace=world.workspace, action__startswith="membership.")
                .order_by("id").values_list("action", flat=True)) == ["membership.invite", "membership.role_change"]
