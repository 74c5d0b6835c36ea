"""EMAIL_URL parsing, and the mail settings of each mode (read by a fresh process each)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlroom.email_url import email_settings_from_url
from tests.conftest import REPO

PRODUCTION = {
    "CONTROLROOM_MODE": "production",
    "DATABASE_URL": "postgres://cr:pw@127.0.0.1:1/controlroom",
    "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    "ALLOWED_HOSTS": "cr.example.com",
    "SECRET_KEY": secrets.token_urlsafe(50),
}
SHOW_MAIL = ("from django.conf import settings as s; print(s.EMAIL_BACKEND, getattr(s, 'EMAIL_FILE_PATH', '-'), "
             "getattr(s, 'EMAIL_HOST', '-'), s.EMAIL_PORT, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL, "
             "s.EMAIL_HOST_PASSWORD or '-', s.DEFAULT_FROM_EMAIL.replace(' ', '_'), s.SERVER_EMAIL.replace(' ', '_'))")


def settings_of(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``manage.py shell`` printing the mail settings under exactly ``env`` (plus a data dir)."""
    drop = ("DATABASE_URL", "SECRET_KEY", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_URL", "DEFAULT_FROM_EMAIL",
            "SERVER_EMAIL", "CONTROLROOM_MODE")
    base = {k: v for k, v in os.environ.items() if k not in drop and k.removesuffix("_FILE") not in drop}
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_MAIL], cwd=REPO, capture_output=True,
                          text=True, env={**base, "CONTROLROOM_DATA_DIR": str(tmp_path), **env}, timeout=120)


def test_smtp_means_starttls_and_smtps_implicit_tls():
    assert email_settings_from_url("smtp://mailer:p%40ss%2Fword@mail.example.com:2525?timeout=5") == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "mail.example.com", "EMAIL_PORT": 2525,
        "EMAIL_HOST_USER": "mailer", "EMAIL_HOST_PASSWORD": "p@ss/word",
        "EMAIL_USE_TLS": True, "EMAIL_USE_SSL": False, "EMAIL_TIMEOUT": 5.0,
    }
    implicit = email_settings_from_url("smtps://u:p@smtp.example.com")
    assert (implicit["EMAIL_PORT"], implicit["EMAIL_USE_TLS"], implicit["EMAIL_USE_SSL"]) == (465, False, True)
    plain = email_settings_from_url("smtp://relay.internal:25?starttls=false")
    assert (plain["EMAIL_USE_TLS"], plain["EMAIL_HOST_USER"], plain["EMAIL_TIMEOUT"]) == (False, "", 10)
    assert email_settings_from_url("smtp://mail.example.com")["EMAIL_PORT"] == 587


@pytest.mark.parametrize(("url", "message"), [
    ("mailto:ops@example.com", "must start with smtp:// (STARTTLS) or smtps:// (implicit TLS), not mailto://"),
    ("mail.example.com:587", "must start with smtp://"),
    ("smtp://user:s3cret@:587", "names no host"),
    ("smtp://user:s3cret@mail.example.com:twenty", "is not a valid URL"),
    ("smtp://user:s3cret@mail.example.com/inbox", "takes no path"),
    ("smtp://user:s3cret@mail.example.com?tls=yes", "unknown options: tls (known: timeout, starttls)"),
    ("smtp://user:s3cret@mail.example.com?timeout=0", "?timeout='0' must be a number of seconds"),
    ("smtp://user:s3cret@mail.example.com?timeout=soon", "?timeout='soon' must be a number of seconds"),
    ("smtp://user:s3cret@mail.example.com?timeout=1&timeout=2", "repeats the option timeout"),
    ("smtp://user:s3cret@mail.example.com?starttls=maybe", "?starttls='maybe' is not a boolean"),
    ("smtp://user:s3cret@mail.example.com?starttls=false", "sends a password without TLS"),
])
def test_a_malformed_url_names_the_variable_and_hides_the_password(url, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        email_settings_from_url(url)
    assert str(raised.value).startswith("EMAIL_URL") and message in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_embedded_mode_writes_mail_into_the_data_dir(tmp_path):
    shown = settings_of(tmp_path, {})
    assert shown.stdout.split()[-9:] == [
        "django.core.mail.backends.filebased.EmailBackend", str(tmp_path / "mail"), "localhost", "25", "False",
        "False", "-", "Control_Room_<controlroom@localhost>", "Control_Room_<controlroom@localhost>"], shown.stderr


def test_production_reads_email_url_from_a_file_with_its_sender(tmp_path):
    secret = tmp_path / "email_url"
    secret.write_text("smtps://mailer:s3cret@mail.example.com\n")
    shown = settings_of(tmp_path, {**PRODUCTION, "EMAIL_URL_FILE": str(secret),
                                   "DEFAULT_FROM_EMAIL": "Control Room <cr@example.com>",
                                   "SERVER_EMAIL": "alerts@example.com"})
    assert shown.stdout.split()[-9:] == [
        "django.core.mail.backends.smtp.EmailBackend", "-", "mail.example.com", "465", "False", "True", "s3cret",
        "Control_Room_<cr@example.com>", "alerts@example.com"], shown.stderr


def test_production_without_email_url_logs_instead_of_sending(tmp_path):
    shown = settings_of(tmp_path, PRODUCTION)
    assert shown.stdout.split()[-9] == "controlroom.mail_backend.UnconfiguredEmailBackend", shown.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"EMAIL_URL": "smtp://mailer:s3cret@mail.example.com:abc"}, "EMAIL_URL is not a valid URL"),
    ({"EMAIL_URL": "smtp://mailer:s3cret@mail.example.com"}, "DEFAULT_FROM_EMAIL (such as 'Control Room"),
    ({"EMAIL_URL": "smtp://mail.example.com", "DEFAULT_FROM_EMAIL": "Control Room"},
     "DEFAULT_FROM_EMAIL='Control Room' is not an e-mail address"),
])
def test_bad_mail_settings_stop_the_process(tmp_path, env, message):
    shown = settings_of(tmp_path, {**PRODUCTION, **env})
    assert shown.returncode != 0 and message in shown.stderr, shown.stderr[-2000:]
    assert "s3cret" not in shown.stderr


def test_the_unconfigured_backend_logs_who_was_not_mailed_but_not_the_body(caplog):
    from django.core.mail import EmailMessage

    from controlroom.mail_backend import UnconfiguredEmailBackend

    sent = UnconfiguredEmailBackend().send_messages([EmailMessage("Password reset", "link: /reset/secret-key/",
                                                                  to=["kim@example.com"])])
    assert sent == 0
    assert "EMAIL_URL is not set: 'Password reset' to kim@example.com" in caplog.text
    assert "secret-key" not in caplog.text
