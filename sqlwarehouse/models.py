"""Saved queries (versioned), and the history of every execution with its stored result."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from artifacts.models import Blob
from connections.models import Connection
from controlroom.models import ApiToken, Environment, Workspace


class SavedQuery(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private", "Only me"
        WORKSPACE = "workspace", "The workspace"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="saved_queries")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.WORKSPACE)
    sql = models.TextField()
    # [{"name": "since", "type": "date", "default": "2024-01-01"}]; the SQL says :since.
    parameters = models.JSONField(default=list, blank=True)
    chart = models.JSONField(default=dict, blank=True)  # {"type": "bar", "x": "col", "y": ["col2"]}
    connection = models.ForeignKey(Connection, on_delete=models.SET_NULL, null=True, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    version = models.PositiveIntegerField(default=1)
    last_execution = models.ForeignKey("QueryExecution", on_delete=models.SET_NULL, null=True, blank=True,
                                       related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class SavedQueryVersion(models.Model):
    """One save of a saved query; never changed afterwards."""

    saved_query = models.ForeignKey(SavedQuery, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    sql = models.TextField()
    parameters = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["saved_query", "number"], name="uniq_saved_query_version")]

    def __str__(self) -> str:
        return f"{self.saved_query_id} v{self.number}"


class QueryExecution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="query_executions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    # Submitted through the API with this token (no user): it runs in the engines as token-<id>.
    api_token = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.SET_NULL, null=True)
    # The environment the query ran for: it decides who may write (in prod only admins).
    environment = models.ForeignKey(Environment, on_delete=models.SET_NULL, null=True, blank=True)
    saved_query = models.ForeignKey(SavedQuery, on_delete=models.SET_NULL, null=True, blank=True)
    sql = models.TextField()
    parameters = models.JSONField(default=dict, blank=True)
    engine = models.CharField(max_length=16)
    read_only = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    engine_query_id = models.CharField(max_length=200, blank=True, default="")
    # {"state", "completed_splits", "total_splits", "rows", "statement", "statements"}
    progress = models.JSONField(default=dict, blank=True)
    columns = models.JSONField(default=list)  # [{"name", "type"}]
    rows = models.JSONField(default=list)  # a preview: the first rows, JSON-safe
    row_count = models.BigIntegerField(default=0)
    truncated = models.BooleanField(default=False)  # cut at the workspace's row cap
    # The editor's LIMIT selector (or the API's limit) applied by reading at most this many rows
    # (sqlwarehouse.workbench.limited); None: the SQL carries its limit, or there is none.
    row_limit = models.PositiveIntegerField(null=True, blank=True)
    result = models.ForeignKey(Blob, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    manifest = models.JSONField(default=dict, blank=True)  # columns, types, rows, bytes, sha256
    # One outcome per statement of a multi-statement run, in order: {"n", "sql" (cut), "status"
    # (succeeded, failed, cancelled, not_run), "rows" (rows returned, or None), "duration_ms", "error",
    # "shown" (its rows are the stored result)}.
    statements = models.JSONField(default=list, blank=True)
    # The saved query's version whose SQL ran (None: the editor's unsaved text of that query).
    saved_query_version = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()  # submitted
    # Renewed by the worker while it runs the query; a stale one means the worker is gone.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "user", "-id"])]

    def save(self, *args, **kwargs) -> None:
        """Stored with the workspace's secrets masked in its error and statement outcomes (an
        engine or the parser may echo a password; controlroom.masking)."""
        from controlroom.masking import mask_text, mask_value

        self.error = mask_text(self.workspace_id, self.error)
        self.statements = mask_value(self.workspace_id, self.statements)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"execution {self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def elapsed_s(self) -> float:
        """Seconds since it was submitted (until it ended)."""
        from django.utils import timezone

        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class SchemaSnapshot(models.Model):
    """A connection's catalogs, schemas, tables and columns as last read from the engine: the
    schema browser and editor completion read this, and a refresh replaces it. A connection with
    one database per environment has a snapshot per environment; others have one (no environment)."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="schema_snapshots")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, null=True, blank=True)
    # {"catalog": {"schema": {"table": [["column", "type"], ...]}}}
    namespace = models.JSONField(default=dict)
    tables = models.PositiveIntegerField(default=0)
    fetched_at = models.DateTimeField()
    fetch_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "environment"], name="uniq_schema_snapshot"),
            models.UniqueConstraint(fields=["connection"], condition=models.Q(environment__isnull=True),
                                    name="uniq_schema_snapshot_shared"),
        ]

    def __str__(self) -> str:
        return f"schema of {self.connection_id}"
