"""The e-mail backend of a production server without ``EMAIL_URL``: it says so, and sends nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

logger = logging.getLogger(__name__)


class UnconfiguredEmailBackend(BaseEmailBackend):
    """Log each mail as not sent, naming the variable that would send it; never log its body.

    The body of a password-reset mail is a credential (the reset link), so only the subject
    and recipients reach the log.
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            logger.warning("mail not sent, EMAIL_URL is not set: %r to %s", message.subject,
                           ", ".join(message.recipients()))
        return 0
