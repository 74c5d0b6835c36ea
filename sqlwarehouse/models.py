"""Saved queries and the history of every execution."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from connections.models import Connection
from controlroom.models import Workspace


class SavedQuery(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="saved_queries")
    title = models.CharField(max_length=200)
    sql = models.TextField()
    connection = models.ForeignKey(Connection, on_delete=models.SET_NULL, null=True, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class QueryExecution(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="query_executions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    connection = models.ForeignKey(Connection, on_delete=models.SET_NULL, null=True)
    saved_query = models.ForeignKey(SavedQuery, on_delete=models.SET_NULL, null=True, blank=True)
    sql = models.TextField()
    engine = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.TextField(blank=True, default="")
    columns = models.JSONField(default=list)
    rows = models.JSONField(default=list)
    row_count = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "user", "-id"])]

    def __str__(self) -> str:
        return f"execution {self.pk}"
