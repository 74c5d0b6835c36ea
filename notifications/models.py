"""One row per notification a run's event owes one target: created once, sent by a worker."""

from __future__ import annotations

from django.db import models

from controlroom.models import Workspace
from runs.models import Job, Run


class Notification(models.Model):
    class Kind(models.TextChoices):
        FAILURE = "failure", "Failure"
        RECOVERY = "recovery", "Recovery"  # succeeded after a failed run of the job in its environment
        LONG_RUN = "long_run", "Long run"  # still running past the spec's duration_threshold_s

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"  # no attempt left

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="notifications", db_index=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=500)  # an address, or the webhook URL as the spec wrote it
    secret_ref = models.CharField(max_length=64, blank=True, default="")  # a webhook's, by name
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    # A worker sending it holds it until then; another waits (or takes it over after a crash).
    claimed_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        # The event is sent once per target however often settle or the long-run check runs.
        constraints = [models.UniqueConstraint(fields=["run", "kind", "channel", "target"],
                                               name="uniq_notification")]
        indexes = [models.Index(fields=["next_attempt_at"], name="notification_pending_idx",
                                condition=models.Q(state="pending"))]

    def __str__(self) -> str:
        return f"{self.kind} of run {self.run_id} by {self.channel}"
