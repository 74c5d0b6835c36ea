"""Jobs, their immutable versions, runs, phases and the append-only event log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from connections.secret_rules import FOREIGN_REFERENCE
from controlroom.models import Environment, Workspace
from controlroom.services import ServiceError
from runs.git_urls import git_url_check


class Job(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    current_version = models.ForeignKey(
        "JobVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="uniq_job_slug")]
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class JobVersion(models.Model):
    """One accepted edit of a job's spec. Never changed after it is written."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec_text = models.TextField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64)
    git_repo = models.CharField(max_length=500, blank=True, default="")
    git_sha = models.CharField(max_length=40, blank=True, default="")
    git_path = models.CharField(max_length=500, blank=True, default="")
    # {repository path: text} of the files the spec's phases run (spark scripts), read from the
    # repository at git_sha when the version was synced: a run executes exactly its version's code.
    files = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="uniq_job_version")]
        ordering = ["-number"]

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Job versions are immutable; create a new version instead.")
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.job.slug} v{self.number}"


class Timed:
    """Mixin for rows with started_at and finished_at."""

    started_at: object
    finished_at: object

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_RUN = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


class Run(Timed, models.Model):
    class Trigger(models.TextChoices):
        UI = "ui", "UI"
        API = "api", "API"
        SCHEDULE = "schedule", "Schedule"
        GIT = "git", "Git push"
        RERUN = "rerun", "Rerun"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runs")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="runs")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="runs")
    job_version = models.ForeignKey(JobVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    parameters = models.JSONField(default=dict)
    git_sha = models.CharField(max_length=40, blank=True, default="")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_by_label = models.CharField(max_length=200, default="")
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    last_seq = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # sha256 of what the keyed request asked for: the same key with another request is refused.
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")
    input_manifest = models.JSONField(default=dict, blank=True)
    output_manifest = models.JSONField(default=dict, blank=True)
    rerun_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns")
    rerun_mode = models.CharField(max_length=16, blank=True, default="")  # "retry" (failed only) or "rebuild"
    schedule = models.ForeignKey("JobSchedule", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    scheduled_for = models.DateTimeField(null=True, blank=True)  # the cron tick this run belongs to
    late = models.BooleanField(default=False)  # started too long after its tick

    # Not stored: run_create sets it when a keyed request repeated an earlier one (answer 200, not 201).
    replayed = False

    class Meta:
        ordering = ["-id"]
        # The partial ones serve admission and every claim's "does anyone wait?" without walking
        # a workspace's history (100,000 ended runs): waiting runs oldest first, and running ones.
        indexes = [
            models.Index(fields=["workspace", "-id"]), models.Index(fields=["job", "-id"]),
            models.Index(fields=["workspace", "id"], name="run_queued_idx",
                         condition=models.Q(status=RunStatus.QUEUED)),
            # Keyed by id: a claim looks its candidate's run up by id, and with another key a
            # plan from stale statistics walked every running run for each candidate.
            models.Index(fields=["id"], name="run_running_idx", condition=models.Q(status=RunStatus.RUNNING)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "idempotency_key"], name="uniq_run_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN

    def __str__(self) -> str:
        return f"run {self.pk} of {self.job.slug}"


class PhaseState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


_CLAIMABLE = models.Q(state=PhaseState.PENDING, blocked=False)
TERMINAL_PHASE = {PhaseState.SUCCEEDED, PhaseState.FAILED, PhaseState.SKIPPED, PhaseState.CANCELLED}


class Phase(Timed, models.Model):
    # No index of its own: uniq_phase_name (run, name) serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="phases", db_index=False)
    name = models.CharField(max_length=64)
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    config = models.JSONField(default=dict)
    depends_on = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=PhaseState.choices, default=PhaseState.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    timeout_s = models.PositiveIntegerField(default=3600)
    not_before = models.DateTimeField(null=True, blank=True)
    # True while some dependency has not succeeded: claims then need no join over the DAG.
    blocked = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    output = models.JSONField(default=dict)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="uniq_phase_name")]
        # Partial indexes hold only the rows their queries want, so a claim walks live candidates
        # instead of every phase ever ended, and a phase's last state change touches none of them.
        # claims: in id order (one kind), or per kind when kinds are mixed and the planner knows it;
        # the reaper, successes and heartbeats: running phases; a success: the run's open and
        # blocked phases.
        indexes = [
            models.Index(fields=["id"], name="phase_next_idx", condition=_CLAIMABLE),
            models.Index(fields=["kind", "id"], name="phase_claimable_idx", condition=_CLAIMABLE),
            # Keyed by id, not by lease expiry: a success or heartbeat finds its phase by id,
            # and with another key the planner would walk the index's dead entries to filter on it.
            models.Index(fields=["id"], name="phase_running_idx", condition=models.Q(state=PhaseState.RUNNING)),
            models.Index(fields=["run"], name="phase_open_idx",
                         condition=models.Q(state__in=[PhaseState.PENDING, PhaseState.RUNNING])),
            models.Index(fields=["run"], name="phase_blocked_idx", condition=models.Q(blocked=True)),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.name}"


class EventType(models.TextChoices):
    RUN_CREATED = "RUN_CREATED"
    PHASE_CLAIMED = "PHASE_CLAIMED"
    PHASE_STARTED = "PHASE_STARTED"
    PHASE_PROGRESS = "PHASE_PROGRESS"
    PHASE_LOG = "PHASE_LOG"
    PHASE_FAILED = "PHASE_FAILED"
    PHASE_SUCCEEDED = "PHASE_SUCCEEDED"
    PHASE_RETRY_SCHEDULED = "PHASE_RETRY_SCHEDULED"
    PHASE_LEASE_EXPIRED = "PHASE_LEASE_EXPIRED"
    PHASE_SKIPPED = "PHASE_SKIPPED"
    PHASE_CANCELLED = "PHASE_CANCELLED"
    RUN_SUCCEEDED = "RUN_SUCCEEDED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"


class RunEvent(models.Model):
    """Append-only; ``seq`` orders events within a run, ``event_id`` de-duplicates."""

    # No index of its own: uniq_event_seq (run, seq) serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
    # No index of its own: event_phase_seq_idx (phase, seq) serves lookups by phase.
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, null=True, blank=True, related_name="events",
                              db_index=False)
    seq = models.PositiveIntegerField()
    event_id = models.UUIDField(default=uuid.uuid4, unique=True)
    type = models.CharField(max_length=32, choices=EventType.choices)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict)
    ts = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="uniq_event_seq")]
        indexes = [
            # The run page's log of one phase: its newest lines, keyset windows by seq (1M lines).
            models.Index(fields=["phase", "seq"], name="event_phase_seq_idx"),
            # Where each attempt of a phase begins, for the log's attempt filter and labels.
            models.Index(fields=["phase", "seq"], name="event_claim_idx",
                         condition=models.Q(type=EventType.PHASE_CLAIMED)),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"


class JobSchedule(models.Model):
    """A cron schedule of a job in one environment, run by django-celery-beat."""

    class Missed(models.TextChoices):
        SKIP = "skip", "Skip missed ticks (run once, now)"
        CATCH_UP = "catch_up", "Catch up (one run per missed tick)"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="schedules")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=100, help_text="minute hour day-of-month month day-of-week")
    timezone = models.CharField(max_length=64, default="UTC")
    parameters = models.JSONField(default=dict, blank=True)
    missed_policy = models.CharField(max_length=16, choices=Missed.choices, default=Missed.SKIP)
    late_after_s = models.PositiveIntegerField(default=300)
    enabled = models.BooleanField(default=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True,
                                         blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "environment"], name="uniq_schedule_per_env")]

    def __str__(self) -> str:
        return f"{self.job.slug}@{self.environment.name}: {self.cron}"


class GitSource(models.Model):
    """A git repository folder whose job specs a workspace imports (on sync or on a signed push)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="git_source")
    url = models.CharField(max_length=500, help_text="Anything `git clone` accepts.")
    branch = models.CharField(max_length=200, default="main")
    folder = models.CharField(max_length=500, default="jobs", blank=True)
    webhook_secret = models.ForeignKey("connections.SecretRef", on_delete=models.PROTECT, null=True, blank=True)
    run_on_push = models.BooleanField(default=False)
    last_synced_sha = models.CharField(max_length=40, blank=True, default="")
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        # Shown in the admin's messages and history: never with a token the URL may carry.
        from controlroom.redact import url_credentials_removed

        return f"{url_credentials_removed(self.url)}#{self.branch}:{self.folder}"

    def clean(self) -> None:
        """Only the git URLs git_url_check accepts; only the workspace's own webhook secret."""
        errors = {}
        try:
            self.url = git_url_check(self.url)
        except ServiceError as exc:
            errors["url"] = str(exc)
        if self.branch.startswith("-") or not self.branch.strip():
            errors["branch"] = "The branch name must not be empty or start with '-'."
        if self.webhook_secret_id and self.workspace_id and self.webhook_secret.workspace_id != self.workspace_id:
            errors["webhook_secret"] = FOREIGN_REFERENCE
        if errors:
            raise ValidationError(errors)


class GitDelivery(models.Model):
    """A push webhook delivery, kept so that a replayed delivery (same id) is ignored."""

    source = models.ForeignKey(GitSource, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.CharField(max_length=200)
    # The signed body's sha256: a signature does not cover the delivery id header, so a captured
    # delivery replayed under a new id is known by its body.
    body_sha256 = models.CharField(max_length=64, blank=True, default="")
    sha = models.CharField(max_length=40, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    # queued, syncing, synced, failed or ignored; ``result`` holds what the sync did (jobs, runs, errors).
    status = models.CharField(max_length=16, default="queued")
    claimed_at = models.DateTimeField(null=True, blank=True)  # when a worker took it (status syncing)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "delivery_id"], name="uniq_git_delivery"),
            models.UniqueConstraint(fields=["source", "body_sha256"], name="uniq_git_delivery_body",
                                    condition=~models.Q(body_sha256="")),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.delivery_id}"


class MlflowRun(models.Model):
    """An MLflow run made for one attempt of a phase (runs/mlflow.py): shown on the run page."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="mlflow_runs")
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="mlflow_runs")
    attempt = models.PositiveIntegerField()
    connection = models.ForeignKey("connections.Connection", on_delete=models.SET_NULL, null=True, related_name="+")
    experiment_id = models.CharField(max_length=64)
    mlflow_run_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"MLflow run {self.mlflow_run_id} of {self.phase}"


class JobHook(models.Model):
    """A signed URL (``/hooks/jobs/<public_id>``) that triggers one job in one environment with
    the JSON body as its parameters (runs/job_hooks.py). The signing secret is kept encrypted
    with a key derived from SECRET_KEY (the HMAC needs it back) and shown once, when it is made."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="job_hooks")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="hooks")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    public_id = models.CharField(max_length=32, unique=True)
    secret_encrypted = models.TextField()
    # The role its runs are started with: the maker's (admin or operator) when it was made.
    role = models.CharField(max_length=16)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["job", "environment"], name="uniq_live_job_hook",
                                               condition=models.Q(revoked_at__isnull=True))]

    def __str__(self) -> str:
        return f"hook {self.public_id[:6]}… of {self.job_id} in {self.environment_id}"


class JobHookDelivery(models.Model):
    """A signature a hook accepted, kept until its timestamp leaves the replay window: the same
    signed request sent again finds its row and is refused."""

    hook = models.ForeignKey(JobHook, on_delete=models.CASCADE, related_name="deliveries")
    signature_sha256 = models.CharField(max_length=64)
    run = models.ForeignKey(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    received_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hook", "signature_sha256"], name="uniq_job_hook_signature")]

    def __str__(self) -> str:
        return f"{self.hook_id}:{self.signature_sha256[:12]}"
