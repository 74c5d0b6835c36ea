"""The API token page as part of the workspace admin pages: the once-shown value has a copy
button (a static script, as the CSP allows no inline one), is not cached, and the page sits in
the admin sub-navigation. Expiry and last use are covered by tests/test_tokens.py; the copy
itself in Chromium by tests/test_workspace_admin_browser.py."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db
TOKENS = "/w/acme/tokens/"


def test_a_new_token_has_a_copy_button_and_is_not_cached(world):
    response = world.client("admin").post(TOKENS, {"name": "ci", "role": "operator", "expires_in": "30",
                                                  "scopes": ["runs:read", "runs:write"]})
    body = response.content.decode()
    value = response.context["new_value"]
    assert f'<pre class="preview grow" id="new-token">{value}</pre>' in body
    assert 'data-copy="#new-token"' in body and 'src="/static/controlroom/copy.js"' in body
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body)  # no inline script
    assert "no-store" in response["Cache-Control"]
    listing = world.client("admin").get(TOKENS)
    assert "copy.js" not in listing.content.decode() and "no-store" not in listing.get("Cache-Control", "")
    assert 'class="active">API tokens</a>' in listing.content.decode()


def test_the_admin_link_is_shown_to_admins_only(world):
    link = 'href="/w/acme/settings/members/">Admin</a>'
    assert link in world.client("admin").get("/w/acme/jobs/").content.decode()
    for persona in ("operator", "analyst", "viewer"):
        assert link not in world.client(persona).get("/w/acme/jobs/").content.decode(), persona
