"""E-mail notifications through Django's mail API (EMAIL_URL configures the server)."""

from __future__ import annotations

import logging
import smtplib

from django.core.mail import send_mail

from notifications.channels.base import Message, NotifyError

log = logging.getLogger(__name__)


def send(*, target: str, message: Message, workspace_id: int, secret_ref: str) -> None:
    """Mail ``message`` to the address ``target`` from DEFAULT_FROM_EMAIL."""
    try:
        delivered = send_mail(message.subject, message.text, None, [target], fail_silently=False)
    except smtplib.SMTPRecipientsRefused:
        log.warning("notification %s: the mail server refused %s", message.notification_id, target, exc_info=True)
        raise NotifyError("The mail server refused the recipient.") from None
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("notification %s: mail to %s failed", message.notification_id, target, exc_info=True)
        raise NotifyError(f"The mail server could not take the message ({type(exc).__name__}).") from None
    if not delivered:  # UnconfiguredEmailBackend: production without EMAIL_URL
        raise NotifyError("E-mail is not configured on this server (EMAIL_URL).")


def target_display(target: str) -> str:
    """An address is shown as it is."""
    return target
