"""Job notifications: failure, recovery and long-run events, e-mailed through a real SMTP server
and POSTed as signed Slack-compatible JSON to a real HTTP server, each sent once, with retries.

The SMTP server is aiosmtpd (from requirements-dev.lock) on loopback; the webhook receiver is the
standard library's http.server in a thread, checking X-Signature the way a receiver would."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from connections.models import SecretRef
from notifications import services
from notifications.models import Notification
from notifications.services import notification_send, notifications_for_settled_run
from notifications.tasks import notifications_sweep
from runs.models import Phase, PhaseState, Run, RunStatus
from runs.services.jobs import job_create, job_update
from runs.services.runs import run_create, run_settle
from runs.spec import SpecError, parse_spec
from tests.servers import HOST, free_port

pytestmark = pytest.mark.django_db
ACME_SECRET, OTHER_SECRET = "acme-signing-secret", "other-signing-secret"


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that verifies each request's signature with ``secret`` and answers
    ``fail_first`` requests with 500 (or ``answer`` with ``location`` for every request)."""

    def __init__(self, secret: str, fail_first: int = 0, answer: int = 200, location: str = "") -> None:
        self.secret, self.fail_first, self.answer, self.location = secret, fail_first, answer, location
        self.requests: list[dict] = []
        super().__init__((HOST, 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers["X-Timestamp"]
        expected = "v0=" + hmac.new(self.server.secret.encode(), f"v0:{timestamp}:".encode() + body,
                                    hashlib.sha256).hexdigest()
        verified = hmac.compare_digest(expected, self.headers["X-Signature"] or "") and \
            abs(time.time() - int(timestamp)) < 300
        self.server.requests.append({"path": self.path, "body": json.loads(body), "verified": verified,
                                     "id": self.headers["X-Notification-Id"],
                                     "authorization": self.headers["Authorization"]})
        if not verified:
            status = 401
        elif len(self.server.requests) <= self.server.fail_first:
            status = 500
        else:
            status = self.server.answer
        self.send_response(status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[callable]:
    started: list[Receiver] = []

    def start(secret: str = ACME_SECRET, **kwargs) -> Receiver:
        server = Receiver(secret, **kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smtp(settings) -> Iterator[list]:
    """A real SMTP server (aiosmtpd) that Django's SMTP backend sends to; yields its inbox."""
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], str]] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
            return "250 OK"

    inbox = Inbox()
    server = Controller(inbox, hostname=HOST, port=free_port())
    server.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = HOST, server.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "cr@example.com"
    yield inbox.messages
    server.stop()


@pytest.fixture
def secrets(world, monkeypatch) -> None:
    """Both workspaces name a reference 'hook'; only 'other' has 'hook-other'."""
    monkeypatch.setenv("CONTROLROOM_SECRET_HOOK_ACME", ACME_SECRET)
    monkeypatch.setenv("CONTROLROOM_SECRET_HOOK_OTHER", OTHER_SECRET)
    for workspace, locator in ((world.workspace, "CONTROLROOM_SECRET_HOOK_ACME"),
                               (world.other, "CONTROLROOM_SECRET_HOOK_OTHER")):
        SecretRef.objects.create(workspace=workspace, name="hook", source="env", locator=locator)
    SecretRef.objects.create(workspace=world.other, name="hook-other", source="env",
                             locator="CONTROLROOM_SECRET_HOOK_OTHER")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch) -> None:
    monkeypatch.setattr(services, "RETRY_BASE_S", 0.0)


def spec_text(notifications: str, name: str = "nightly") -> str:
    return (f"name: {name}\nphases:\n  - name: a\n    kind: python\n    config: {{callable: fail}}\n"
            f"notifications:\n{notifications}")


def webhook(url: str, ref: str = "hook", on: str = "[failure, recovery]") -> str:
    return f"  events: {on}\n  webhook: {{url: '{url}', secret_ref: {ref}}}\n"


def started_run(world, notifications: str, environment: str = "dev") -> Run:
    """A run of the job (created on first use) whose phases have not run: the test ends them."""
    access = world.access("operator")
    job = world.workspace.jobs.filter(slug="nightly").first() or job_create(access=access,
                                                                             spec_text=spec_text(notifications))
    return run_create(access=access, job=job, environment=environment)


def finish(run: Run, *, ok: bool, capture) -> Run:
    """End every phase (succeeded or failed) and settle the run, sending what it owes."""
    Phase.objects.filter(run=run).update(state=PhaseState.SUCCEEDED if ok else PhaseState.FAILED,
                                         error="" if ok else "boom", finished_at=timezone.now())
    with capture(execute=True):
        run_settle(run_id=run.pk)
    run.refresh_from_db()
    return run


# --- triggers ------------------------------------------------------------------------------------


def test_a_failed_run_mails_each_address_once_through_a_real_smtp_server(world, smtp, eager_celery, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.NOTIFY_BASE_URL = "https://cr.example.com"
    run = finish(started_run(world, "  email: [oncall@example.com, lead@example.com]\n"), ok=False,
                 capture=django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    rows = list(Notification.objects.filter(run=run).values_list("kind", "channel", "target", "state", "attempts"))
    assert sorted(rows) == [("failure", "email", "lead@example.com", "sent", 1),
                            ("failure", "email", "oncall@example.com", "sent", 1)]
    assert sorted(r for _, rcpts, _ in smtp for r in rcpts) == ["lead@example.com", "oncall@example.com"]
    sender, _, content = smtp[0]
    assert sender == "cr@example.com"
    assert f"Subject: [Control Room] Run #{run.pk} of nightly in dev failed" in content
    assert "a: boom" in content and f"https://cr.example.com/w/acme/runs/{run.pk}/" in content


def test_an_end_to_end_failing_run_notifies_through_the_worker(world, secrets, receiver, eager_celery,
                                                               django_capture_on_commit_callbacks):
    hook = receiver()
    job = job_create(access=world.access("operator"), spec_text=spec_text(webhook(hook.url)))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(access=world.access("operator"), job=job)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    [request] = hook.requests
    assert request["verified"] and request["body"]["controlroom"]["event"] == "failure"
    assert request["body"]["text"].startswith(f"Run #{run.pk} of nightly in dev failed")
    assert request["body"]["blocks"][0]["type"] == "section"


def test_success_after_a_failure_is_a_recovery_and_success_after_success_is_not(
        world, secrets, receiver, eager_celery, django_capture_on_commit_callbacks):
    hook = receiver()
    capture = django_capture_on_commit_callbacks
    finish(started_run(world, webhook(hook.url)), ok=True, capture=capture)  # first run: nothing to recover
    failed = finish(started_run(world, ""), ok=False, capture=capture)
    in_stage = finish(started_run(world, "", environment="stage"), ok=True, capture=capture)  # another env
    recovered = finish(started_run(world, ""), ok=True, capture=capture)
    again = finish(started_run(world, ""), ok=True, capture=capture)
    kinds = {run.pk: list(Notification.objects.filter(run=run).values_list("kind", flat=True))
             for run in (failed, in_stage, recovered, again)}
    assert kinds == {failed.pk: ["failure"], in_stage.pk: [], recovered.pk: ["recovery"], again.pk: []}
    assert [r["body"]["controlroom"]["event"] for r in hook.requests] == ["failure", "recovery"]
    assert all(r["verified"] for r in hook.requests)


def test_a_cancelled_run_in_between_does_not_hide_the_failure(world, secrets, receiver, eager_celery,
                                                              django_capture_on_commit_callbacks):
    hook = receiver()
    capture = django_capture_on_commit_callbacks
    finish(started_run(world, webhook(hook.url, on="[recovery]")), ok=False, capture=capture)
    cancelled = started_run(world, "")
    Run.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    assert finish(cancelled, ok=False, capture=capture).status == RunStatus.CANCELLED
    recovered = finish(started_run(world, ""), ok=True, capture=capture)
    assert list(Notification.objects.values_list("run_id", "kind")) == [(recovered.pk, "recovery")]


def test_a_long_run_is_reported_once_by_the_periodic_check(world, secrets, receiver, eager_celery,
                                                           django_capture_on_commit_callbacks):
    hook = receiver()
    notifications = webhook(hook.url, on="[long_run]") + "  duration_threshold_s: 600\n"
    long_one, short_one = started_run(world, notifications), started_run(world, "")
    now = timezone.now()
    Run.objects.filter(pk=long_one.pk).update(status=RunStatus.RUNNING, started_at=now - timedelta(seconds=700))
    Run.objects.filter(pk=short_one.pk).update(status=RunStatus.RUNNING, started_at=now - timedelta(seconds=500))
    for _ in range(3):  # the beat runs every minute
        with django_capture_on_commit_callbacks(execute=True):
            notifications_sweep()
    assert list(Notification.objects.values_list("run_id", "kind", "state")) == [(long_one.pk, "long_run", "sent")]
    [request] = hook.requests
    assert request["verified"] and "is running long: running for 12 min" in request["body"]["text"]
    # It ends failed later: the failure is another event, also sent once (long_run is not in 'on': none).
    finish(long_one, ok=False, capture=django_capture_on_commit_callbacks)
    assert Notification.objects.count() == 1


# --- once only -----------------------------------------------------------------------------------


def test_a_second_settle_or_a_racing_creator_sends_nothing_more(world, secrets, receiver, eager_celery,
                                                                 django_capture_on_commit_callbacks):
    hook = receiver()
    run = finish(started_run(world, webhook(hook.url)), ok=False, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        run_settle(run_id=run.pk)  # settle again (a redelivered message)
        notifications_for_settled_run(Run.objects.get(pk=run.pk))  # a worker that raced the first settle
        notification_send(notification_id=Notification.objects.get().pk)  # a duplicate send message
    assert Notification.objects.count() == 1 and len(hook.requests) == 1


def test_a_notification_held_by_one_worker_is_not_sent_by_another(world, secrets, receiver,
                                                                  django_capture_on_commit_callbacks):
    hook = receiver()
    run = finish(started_run(world, webhook(hook.url)), ok=False, capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    Notification.objects.filter(pk=note.pk).update(claimed_until=timezone.now() + timedelta(seconds=60))
    assert notification_send(notification_id=note.pk) is None and hook.requests == []
    assert services.notifications_stalled(now=timezone.now() + timedelta(seconds=30)) == []
    # the holder died: once its claim has run out, the sweep hands the row on
    later = timezone.now() + timedelta(seconds=services.SWEEP_GRACE_S + 61)
    assert services.notifications_stalled(now=later) == [note.pk]


# --- retries -------------------------------------------------------------------------------------


def test_a_webhook_that_fails_twice_is_retried_and_sent_once(world, secrets, receiver, eager_celery,
                                                             django_capture_on_commit_callbacks):
    hook = receiver(fail_first=2)
    run = finish(started_run(world, webhook(hook.url)), ok=False, capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    assert (note.state, note.attempts, note.last_error) == ("sent", 3, "")
    assert len(hook.requests) == 3 and len({r["id"] for r in hook.requests}) == 1  # the same notification


def test_attempts_back_off_exponentially_and_stop_with_the_last_error(world, secrets, receiver, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "RETRY_BASE_S", 30.0)
    hook = receiver(answer=503)
    run = finish(started_run(world, webhook(hook.url)), ok=False, capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    delays = []
    for _ in range(services.MAX_ATTEMPTS):
        assert notification_send(notification_id=note.pk) is None or True
        note.refresh_from_db()
        if note.state == "pending":
            delays.append(round((note.next_attempt_at - timezone.now()).total_seconds()))
            assert notification_send(notification_id=note.pk) is None  # not due yet: no attempt
            Notification.objects.filter(pk=note.pk).update(next_attempt_at=timezone.now())
    note.refresh_from_db()
    assert delays == [30, 60, 120, 240]
    assert (note.state, note.attempts, note.last_error) == ("failed", 5, "The webhook answered HTTP 503.")
    assert len(hook.requests) == 5
    assert notification_send(notification_id=note.pk) is None and len(hook.requests) == 5


def test_a_redirect_is_not_followed(world, secrets, receiver, eager_celery, django_capture_on_commit_callbacks):
    elsewhere = receiver()
    hook = receiver(answer=302, location=elsewhere.url)
    run = finish(started_run(world, webhook(hook.url)), ok=False, capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    assert note.state == "failed" and "redirects are not followed" in note.last_error
    assert len(hook.requests) == services.MAX_ATTEMPTS and elsewhere.requests == []


def test_a_link_local_address_is_refused_before_connecting(world, secrets, eager_celery,
                                                           django_capture_on_commit_callbacks):
    run = finish(started_run(world, webhook("http://169.254.169.254/latest/meta-data")), ok=False,
                 capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    assert note.state == "failed" and "link-local or metadata address" in note.last_error


# --- secrets stay in their workspace -------------------------------------------------------------


def test_the_signature_uses_the_runs_own_workspace_secret(world, secrets, receiver, eager_celery,
                                                          django_capture_on_commit_callbacks):
    ours, theirs = receiver(ACME_SECRET), receiver(OTHER_SECRET)
    access = world.access("operator")
    job = job_create(access=access, spec_text=spec_text(webhook(ours.url)))
    finish(run_create(access=access, job=job), ok=False, capture=django_capture_on_commit_callbacks)
    job_update(access=access, job=job, spec_text=spec_text(webhook(theirs.url)))
    finish(run_create(access=access, job=job), ok=False, capture=django_capture_on_commit_callbacks)
    # 'hook' is acme's reference, whatever 'other' calls its own: only acme's secret signs
    assert [r["verified"] for r in ours.requests] == [True]
    assert theirs.requests and not any(r["verified"] for r in theirs.requests)


def test_another_workspaces_secret_reference_is_never_used(world, secrets, receiver, eager_celery,
                                                           django_capture_on_commit_callbacks):
    hook = receiver(OTHER_SECRET)
    run = finish(started_run(world, webhook(hook.url, ref="hook-other")), ok=False,
                 capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    assert (note.state, note.last_error) == ("failed", "The secret reference 'hook-other' does not exist in this "
                                                       "workspace.")
    assert hook.requests == []


# --- the run page --------------------------------------------------------------------------------


def test_the_run_page_lists_notifications_without_url_credentials(world, secrets, receiver, smtp, eager_celery,
                                                                  django_capture_on_commit_callbacks):
    hook = receiver(fail_first=1)
    url = hook.url.replace("http://", "http://ops:hunter2@") + "?token=s3cr3t"
    run = finish(started_run(world, webhook(url) + "  email: [oncall@example.com]\n"), ok=False,
                 capture=django_capture_on_commit_callbacks)
    assert hook.requests[-1]["path"] == "/hook?token=s3cr3t" and hook.requests[-1]["authorization"]
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    table = page[page.index('<table id="notifications">'):]
    table = table[:table.index("</table>")]
    assert hook.url in table and "hunter2" not in page and "s3cr3t" not in page and "ops:" not in table
    assert "oncall@example.com" in table and "Webhook" in table and "E-mail" in table and "Failure" in table
    assert table.count(">sent<") == 2 and "<td class=\"num\">2</td>" in table  # the webhook's two attempts


def test_a_failed_notification_shows_its_error_on_the_run_page(world, secrets, eager_celery,
                                                               django_capture_on_commit_callbacks):
    run = finish(started_run(world, webhook(f"http://{HOST}:{free_port()}/hook")), ok=False,
                 capture=django_capture_on_commit_callbacks)
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert ">failed<" in page and "The webhook could not be reached (ConnectionRefusedError)." in page
    assert world.client("outsider").get(f"/w/acme/runs/{run.pk}/").status_code == 404


def test_a_run_without_notifications_shows_no_section(world, django_capture_on_commit_callbacks):
    run = finish(started_run(world, "  email: [a@example.com]\n  events: [recovery]\n"), ok=False,
                 capture=django_capture_on_commit_callbacks)
    assert 'id="notifications"' not in world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()


# --- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    ("  events: [failure]\n", "line 7, notifications: name at least one channel: email (a list of addresses) "
                              "or webhook"),
    ("  email: [not-an-address]\n", "line 7, notifications.email[0]: 'not-an-address' is not an e-mail address"),
    ("  email: a@example.com\n", "notifications.email: 'a@example.com' is not of type 'array'"),
    ("  email: [a@example.com]\n  events: [failure, exploded]\n", "'exploded' is not one of ['failure', 'recovery', "
                                                             "'long_run']"),
    ("  email: [a@example.com]\n  events: [long_run]\n", "notifications.events: long_run needs duration_threshold_s"),
    ("  email: [a@example.com]\n  duration_threshold_s: 60\n",
     "duration_threshold_s is used only with long_run in events"),
    ("  email: [a@example.com]\n  events: [long_run]\n  duration_threshold_s: 0\n", "0 is less than the minimum of 1"),
    ("  webhook: {url: 'ftp://example.com/x', secret_ref: hook}\n",
     "notifications.webhook.url: the webhook URL must be http:// or https:// with a host"),
    ("  webhook: {url: 'https://example.com/x'}\n", "'secret_ref' is a required property"),
    ("  webhook: {url: 'https://example.com/x', secret_ref: 'a b'}\n", "notifications.webhook.secret_ref: secret_ref "
                                                                     "must be the name of one of the workspace's"),
    ("  on: [failure]\n  email: [a@example.com]\n", "line 7, notifications: the key true must be text"),  # YAML 1.1
    ("  email: [a@example.com]\n  retries: 3\n", "unknown field(s) ('retries' was unexpected)"),
])
def test_spec_errors_name_the_line_and_field(section, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_text(section))
    assert any(message in error for error in caught.value.errors), caught.value.errors


def test_a_valid_section_is_kept_in_the_spec():
    spec = parse_spec(spec_text("  events: [failure, long_run]\n  email: [a@example.com]\n"
                                "  webhook: {url: 'https://hooks.example.com/x?y=1', secret_ref: hook}\n"
                                "  duration_threshold_s: 600\n"))
    assert spec["notifications"]["webhook"] == {"url": "https://hooks.example.com/x?y=1", "secret_ref": "hook"}


# --- failures of the machinery ---------------------------------------------------------------------


def test_a_failing_subscriber_never_stops_a_run_from_ending(world, monkeypatch, caplog,
                                                            django_capture_on_commit_callbacks):
    from runs import hooks

    def broken(run: Run) -> None:
        Notification.objects.create(workspace=run.workspace, run=run, job=run.job, kind="failure", channel="email",
                                    target="half@example.com")
        raise RuntimeError("subscriber bug")

    monkeypatch.setattr(hooks, "RUN_SETTLED", [broken])
    run = finish(started_run(world, "  email: [a@example.com]\n"), ok=False, capture=django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and run.events.last().type == "RUN_FAILED"
    assert not Notification.objects.exists()  # the subscriber's half-written rows were undone
    assert any("run-settled hook" in r.getMessage() for r in caplog.records)


def test_mail_on_a_server_without_email_url_fails_saying_so(world, settings, eager_celery,
                                                           django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "controlroom.mail_backend.UnconfiguredEmailBackend"
    run = finish(started_run(world, "  email: [a@example.com]\n"), ok=False, capture=django_capture_on_commit_callbacks)
    note = Notification.objects.get(run=run)
    assert (note.state, note.attempts) == ("failed", services.MAX_ATTEMPTS)
    assert note.last_error == "E-mail is not configured on this server (EMAIL_URL)."


def test_a_webhook_target_shows_no_token_of_its_path():
    from notifications.channels.webhook import target_display

    slack = "https://hooks.example.com/services/T000/B000/XXXXsecretXXXX?x=1"
    assert target_display(slack) == "https://hooks.example.com/services/…"
    assert target_display("https://u:p@h.example:8443/hook") == "https://h.example:8443/hook"
    assert target_display("http://[::1]:9000") == "http://[::1]:9000"
