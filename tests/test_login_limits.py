"""Login rate limits: shared by every process, and guarding /admin/login/ too.

allauth counts failed logins in Django's cache ("10/m/ip,5/5m/key"). A cache per process
(LocMemCache) lets each gunicorn worker count on its own; the configured caches (a database
table in embedded mode, Redis in production) are shared. The admin's own login form is
replaced by a hand-over to allauth's login, so staff passwords get the same limits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD, REPO, make_user
from tests.workers import database_url

TOO_MANY = "Too many failed login attempts"
KEY_LIMIT = 5  # failures per username in 5 minutes

# Another OS process, with its own Django and its own cache connection, fails to log in.
FAIL_ELSEWHERE = textwrap.dedent("""
    import sys
    from django.test import Client
    client = Client()
    for attempt in range(int(sys.argv[2])):
        answer = client.post("/accounts/login/", {"login": sys.argv[1], "password": f"wrong-{attempt}"})
        assert answer.status_code == 200 and "_auth_user_id" not in client.session, answer.status_code
""")


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """No counts from other tests; the cache table and Redis outlive a test's transaction."""
    cache.clear()
    yield
    cache.clear()


def run_in_another_process(tmp_path: Path, code: str, *args: str, **env: str) -> str:
    """Run ``code`` (after ``django.setup()``) in a fresh Python on the test database; its stdout.

    It reads the settings as a server process would (embedded mode, the configured cache and
    mail backend), with this process's SECRET_KEY, so tokens it makes are valid here.
    """
    from django.conf import settings

    base = {k: v for k, v in os.environ.items() if k not in ("CACHE_URL", "CELERY_BROKER_URL", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code, *args], cwd=REPO, capture_output=True,
        text=True, timeout=120,
        env={**base, "DJANGO_SETTINGS_MODULE": "controlroom.settings", "DATABASE_URL": database_url(),
             "CONTROLROOM_DATA_DIR": str(tmp_path), "ALLOWED_HOSTS": "testserver",
             "SECRET_KEY": settings.SECRET_KEY, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def fail_in_another_process(tmp_path: Path, username: str, attempts: int, **env: str) -> None:
    run_in_another_process(tmp_path, FAIL_ELSEWHERE, username, str(attempts), **env)


def signs_in(client: Client, username: str, password: str, url: str = "/accounts/login/") -> bool:
    answer = client.post(url, {"login": username, "password": password})
    return "_auth_user_id" in client.session and answer.status_code == 302


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_failures_in_another_process_count_here_with_the_database_cache(fresh_cache, tmp_path):
    make_user("kim")
    fail_in_another_process(tmp_path, "kim", KEY_LIMIT)
    here = Client()
    assert not signs_in(here, "kim", PASSWORD)
    assert TOO_MANY in here.post("/accounts/login/", {"login": "kim", "password": PASSWORD}).content.decode()
    make_user("lee")
    assert signs_in(Client(), "lee", PASSWORD)  # the limit is per username: others still sign in


@pytest.fixture
def redis_cache(settings, redis_server_url) -> Iterator[str]:
    """This process's cache on the suite's Redis, in a database of its own (clear() flushes it)."""
    url = redis_server_url.rsplit("/", 1)[0] + "/13"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    cache.clear()
    yield url
    cache.clear()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_failures_in_another_process_count_here_with_redis(fresh_cache, redis_cache, tmp_path):
    make_user("kim")
    fail_in_another_process(tmp_path, "kim", KEY_LIMIT, CACHE_URL=redis_cache)
    assert not signs_in(Client(), "kim", PASSWORD)


@pytest.mark.django_db
def test_admin_login_hands_over_to_the_limited_login(fresh_cache, client):
    staff = make_user("root")
    staff.is_staff = staff.is_superuser = True
    staff.save()

    # The admin's own form is gone: /admin/login/ sends everyone to allauth's login…
    answer = client.get("/admin/login/?next=/admin/")
    assert answer.status_code == 302 and answer["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    # …so passwords posted at it are never checked, not even the right one.
    for attempt in range(14):
        assert client.post("/admin/login/", {"username": "root", "password": f"wrong-{attempt}"}).status_code == 302
    assert client.post("/admin/login/", {"username": "root", "password": PASSWORD}).status_code == 302
    assert "_auth_user_id" not in client.session

    # 14 failures on the way in through /admin/ end up blocked, and then so is the right password.
    login_url = answer["Location"]
    answers = [client.post(login_url, {"login": "root", "password": f"wrong-{i}"}).content.decode() for i in range(14)]
    assert [TOO_MANY in a for a in answers] == [False] * KEY_LIMIT + [True] * (14 - KEY_LIMIT)
    assert not signs_in(client, "root", PASSWORD, login_url)
    assert client.get("/admin/").status_code == 302

    # Without failures behind it, staff get in through the same door and land on the admin.
    cache.clear()
    entered = client.post(login_url, {"login": "root", "password": PASSWORD})
    assert entered.status_code == 302 and entered["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_is_refused_by_the_admin(world):
    client = world.client("admin")  # a workspace admin, not platform staff
    to_login = client.get("/admin/")
    assert to_login.status_code == 302 and to_login["Location"].startswith("/admin/login/")
    assert client.get(to_login["Location"]).status_code == 403
    assert client.get("/admin/auth/user/").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_the_username_limit_holds_whatever_the_host_header(fresh_cache, settings):
    """allauth would key the count by Host (port included): five failures, each through another
    port and from another client address, must still lock the username."""
    settings.ALLOWED_HOSTS = ["localhost"]
    make_user("kim")
    for i in range(KEY_LIMIT):
        Client(HTTP_HOST=f"localhost:{1000 + i}", REMOTE_ADDR=f"10.0.0.{i + 1}").post(
            "/accounts/login/", {"login": "kim", "password": f"wrong-{i}"})
    client = Client(HTTP_HOST="LOCALHOST:2000", REMOTE_ADDR="10.0.1.1")
    answer = client.post("/accounts/login/", {"login": "Kim", "password": PASSWORD})
    assert TOO_MANY in answer.content.decode() and "_auth_user_id" not in client.session
