"""API tokens: names checked, optional expiry (listed, enforced with 401), and a token page that
answers a bad revoke with a message instead of a 500; ids parsed one way (controlroom/ids.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from controlroom.access import system_access
from controlroom.ids import id_parse
from controlroom.models import MAX_DB_ID, ApiToken, AuditEvent
from controlroom.services import TOKEN_MAX_DAYS, ServiceError, api_token_authenticate, api_token_create

pytestmark = pytest.mark.django_db
JOBS = "/api/v1/workspaces/acme/jobs"


def page(world) -> str:
    return reverse("token_list", kwargs={"workspace": world.workspace.slug})


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_token_names_are_checked(world):
    admin = system_access(world.workspace)
    for name, message in (("", "needs a name"), ("   ", "needs a name"), ("x" * 101, "at most 100 characters"),
                          ("ci\x00bot", "control characters"), ("ci\nbot", "control characters")):
        with pytest.raises(ServiceError, match=message):
            api_token_create(access=admin, name=name, role="viewer")
    assert not ApiToken.objects.exists()
    token, _ = api_token_create(access=admin, name=f"  {'x' * 100}  ", role="viewer")
    assert token.name == "x" * 100


def test_a_long_name_through_the_page_is_a_message_not_a_500(world):
    response = world.client("admin").post(page(world), {"name": "n" * 300, "role": "viewer"}, follow=True)
    assert response.status_code == 200 and "at most 100 characters" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_expiry_in_days_or_as_a_datetime_within_bounds(world):
    admin = system_access(world.workspace)
    token, _ = api_token_create(access=admin, name=" ci ", role="viewer", expires_at=30)
    assert token.name == "ci"
    assert abs(token.expires_at - (timezone.now() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    event = AuditEvent.objects.get(action="api_token.create", target_id=str(token.pk))
    assert event.after["expires_at"] == token.expires_at.isoformat()
    now = timezone.now()
    for bad, message in ((0, "1 to"), (TOKEN_MAX_DAYS + 1, "1 to"), (now - dt.timedelta(seconds=1), "future"),
                         (now + dt.timedelta(days=TOKEN_MAX_DAYS + 1), "at most"),
                         (dt.datetime(2999, 1, 1), "time zone"), ("30", "date and time or a number")):
        with pytest.raises(ServiceError, match=message):
            api_token_create(access=admin, name="bad", role="viewer", expires_at=bad)
    assert ApiToken.objects.count() == 1


def test_an_expired_token_answers_401(world, demo_job):
    admin = system_access(world.workspace)
    token, value = api_token_create(access=admin, name="short", role="viewer", expires_at=1)
    _, forever = api_token_create(access=admin, name="forever", role="viewer")
    client = world.client("viewer")
    assert client.get(JOBS, HTTP_AUTHORIZATION=f"Bearer {value}").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    expired = client.get(JOBS, HTTP_AUTHORIZATION=f"Bearer {value}")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "unauthenticated"
    assert api_token_authenticate(value) is None
    assert client.get(JOBS, HTTP_AUTHORIZATION=f"Bearer {forever}").status_code == 200


def test_the_page_creates_expiring_tokens_and_lists_expiry(world):
    client = world.client("admin")
    client.post(page(world), {"name": "week", "role": "viewer", "expires_in": "7", "scopes": ["runs:read"]})
    client.post(page(world), {"name": "dated", "role": "viewer", "expires_on": "2099-01-31", "scopes": ["runs:read"]})
    client.post(page(world), {"name": "never", "role": "viewer", "scopes": ["runs:read"]})
    assert ApiToken.objects.get(name="never").expires_at is None
    week = ApiToken.objects.get(name="week")
    assert dt.timedelta(days=6, hours=23) < week.expires_at - timezone.now() <= dt.timedelta(days=7)
    # A date means "through that day" (UTC); 2099 is past the maximum, so that one is refused.
    assert not ApiToken.objects.filter(name="dated").exists()
    soon = (timezone.now() + dt.timedelta(days=10)).date()
    client.post(page(world), {"name": "dated", "role": "viewer", "expires_on": soon.isoformat(),
                              "scopes": ["runs:read"]})
    dated = ApiToken.objects.get(name="dated")
    assert dated.expires_at == dt.datetime.combine(soon + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    ApiToken.objects.filter(pk=week.pk).update(expires_at=timezone.now() - dt.timedelta(hours=1))
    html = client.get(page(world)).content.decode()
    assert "expired " in html and f"expires {dated.expires_at:%Y-%m-%d %H:%M}" in html
    for bad in ({"expires_in": "abc"}, {"expires_in": "-5"}, {"expires_on": "31/01/2099"}):
        response = client.post(page(world), {"name": "bad", "role": "viewer", **bad, "scopes": ["runs:read"]})
        assert response.status_code == 200 and any("expir" in m for m in shown(response)), bad
    assert not ApiToken.objects.filter(name="bad").exists()


@pytest.mark.parametrize("value", ["abc", "", " 1", "²", "-1", "0", str(MAX_DB_ID + 1), "9" * 40, "other"])
def test_revoking_a_bad_or_foreign_id_is_a_message_not_a_500(world, value):
    mine, _ = api_token_create(access=system_access(world.workspace), name="mine", role="viewer")
    theirs, _ = api_token_create(access=system_access(world.other), name="theirs", role="viewer")
    value = str(theirs.pk) if value == "other" else value
    response = world.client("admin").post(page(world), {"revoke": value}, follow=True)
    assert response.status_code == 200
    assert "That token does not exist in this workspace." in shown(response)
    assert not ApiToken.objects.filter(pk__in=[mine.pk, theirs.pk], revoked_at__isnull=False).exists()


def test_revoking_twice_keeps_the_first_revocation(world):
    token, _ = api_token_create(access=system_access(world.workspace), name="ci", role="viewer")
    client = world.client("admin")
    client.post(page(world), {"revoke": str(token.pk)})
    first = ApiToken.objects.get().revoked_at
    response = client.post(page(world), {"revoke": str(token.pk)}, follow=True)
    assert "Token ci is already revoked." in shown(response)
    assert ApiToken.objects.get().revoked_at == first
    assert AuditEvent.objects.filter(action="api_token.revoke").count() == 1


def test_id_parse_takes_ascii_digits_within_the_database_range_only():
    cases = [("42", 1, 42), ("0", 0, 0), ("0", 1, None), (str(MAX_DB_ID), 1, MAX_DB_ID),
             (str(MAX_DB_ID + 1), 1, None), ("²", 1, None), ("٣", 1, None), ("", 1, None), (None, 1, None),
             ("+4", 1, None), ("4 ", 1, None), (4, 1, None)]
    assert [id_parse(raw, minimum=minimum) for raw, minimum, _ in cases] == [expected for *_, expected in cases]


@pytest.mark.parametrize("value", ["²", "١٢"])
def test_non_ascii_digits_in_ids_are_not_a_500(world, value):
    """str.isdigit() accepts them and int() then refuses them: the old checks let them through."""
    analyst = world.client("analyst")
    assert analyst.get(f"/w/acme/sql/?saved={value}").status_code == 404
    assert analyst.get(f"/w/acme/runs/?before={value}").status_code == 200
    assert analyst.post("/w/acme/sql/", {"sql": "SELECT 1", "connection": value}).status_code == 200
    api = analyst.get(f"/api/v1/workspaces/acme/runs?before={value}",
                      HTTP_AUTHORIZATION=f"Bearer {world.token('viewer')}")
    assert api.status_code == 400 and api.json()["error"]["code"] == "invalid"


@pytest.mark.django_db
def test_a_far_future_expiry_date_is_a_message_not_a_500(world):
    page = world.client("admin").post("/w/acme/tokens/", {"name": "far", "role": "operator",
                                                          "expires_on": "9999-12-31"}, follow=True)
    assert page.status_code == 200 and "at most" in page.content.decode()
