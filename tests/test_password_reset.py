"""Sign-in page and password reset: no invitation to a closed sign-up, and a reset that mails.

The reset runs in a fresh process with the embedded settings as ``make run`` has them (pytest
swaps the mail backend for its outbox, which would hide a backend that cannot send): the mail
must land in ``<data dir>/mail``, and its link must set a new password.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD, make_user
from tests.test_login_limits import run_in_another_process

NEW_PASSWORD = "a-new-and-longer-passphrase-42"
ASK_FOR_RESET = textwrap.dedent("""
    import sys
    from django.test import Client
    answer = Client().post("/accounts/password/reset/", {"email": sys.argv[1]})
    print(answer.status_code, answer.get("Location"))
""")


def signs_in(username: str, password: str) -> bool:
    client = Client()
    client.post("/accounts/login/", {"login": username, "password": password})
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_the_sign_in_page_does_not_invite_to_a_closed_sign_up(client):
    page = client.get("/accounts/login/")
    html = page.content.decode()
    assert page.status_code == 200 and '<header class="top">' in html  # our layout
    assert not re.search(r"sign[\s-]?up|create an account|register", html, re.I), html
    assert reverse("account_signup") not in html
    assert f'href="{reverse("account_reset_password")}"' in html

    # And the sign-up URL itself stays closed.
    assert "Sign Up Closed" in client.get(reverse("account_signup")).content.decode()
    client.post(reverse("account_signup"), {"username": "mallory", "password1": NEW_PASSWORD,
                                            "password2": NEW_PASSWORD})
    assert not get_user_model().objects.filter(username="mallory").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow  # ~1 s
def test_a_reset_mails_a_working_link_into_the_data_dir(tmp_path):
    user = make_user("kim")
    user.email = "kim@example.com"
    user.save()

    printed = run_in_another_process(tmp_path, ASK_FOR_RESET, "kim@example.com").split()
    assert printed == ["302", reverse("account_reset_password_done")], printed
    mails = list((tmp_path / "mail").iterdir())
    assert len(mails) == 1
    text = mails[0].read_text()
    assert "To: kim@example.com" in text and "Subject: [Control Room] Password Reset" in text
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", text).group(1)

    client = Client()
    form = client.get(link)  # allauth moves the key into the session, then shows the form
    assert form.status_code == 302
    done = client.post(form["Location"], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("account_reset_password_from_key_done")
    assert signs_in("kim", NEW_PASSWORD) and not signs_in("kim", PASSWORD)


@pytest.mark.django_db
def test_a_reset_for_an_unknown_address_mails_nothing(client):
    answer = client.post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    assert answer.status_code == 302  # the same answer as for a known address: no account enumeration
    assert mail.outbox == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_reset_goes_out_through_a_real_smtp_server_named_by_email_url(tmp_path):
    """Production's path: EMAIL_URL names an SMTP server and Django's SMTP backend talks to it
    over the real protocol (aiosmtpd, a real SMTP server, on loopback; plain SMTP, since a
    password would need TLS and this test has no certificate a client would trust)."""
    from aiosmtpd.controller import Controller

    from tests.servers import HOST, free_port

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], str]] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
            return "250 OK"

    user = make_user("kim")
    user.email = "kim@example.com"
    user.save()
    inbox = Inbox()
    server = Controller(inbox, hostname=HOST, port=free_port())
    server.start()
    try:
        printed = run_in_another_process(
            tmp_path, ASK_FOR_RESET, "kim@example.com",
            EMAIL_URL=f"smtp://{HOST}:{server.port}?starttls=false", DEFAULT_FROM_EMAIL="ops@example.com").split()
    finally:
        server.stop()
    assert printed[0] == "302", printed
    assert not (tmp_path / "mail").exists()  # not the embedded file backend: the SMTP server got it
    [(sender, recipients, content)] = inbox.messages
    assert sender == "ops@example.com" and recipients == ["kim@example.com"]
    assert "/accounts/password/reset/key/" in content and "Subject: [Control Room] Password Reset" in content
