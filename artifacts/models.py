"""Content-addressed blobs, which workspace may see each, and the artifact records.

Storage is deduplicated across the platform (one copy of equal bytes), visibility is not: a
workspace sees a blob only through a ``BlobGrant``, which it gets by uploading the bytes itself
(or by producing them in a phase or a query). An artifact kept outside Control Room has no
blob at all: its ``location`` is its own claim and never stands in for uploaded bytes."""

from __future__ import annotations

from django.db import models

from controlroom.models import Workspace


class Blob(models.Model):
    """Bytes held in our store under their sha256; ``size`` was measured when they arrived."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256


class BlobGrant(models.Model):
    """Workspace ``workspace`` may see and reuse ``blob`` (it uploaded or produced the bytes)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="blob_grants")
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="grants")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "blob"], name="uniq_blob_grant")]

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.blob_id}"


class Artifact(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="artifacts")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, null=True, blank=True, related_name="artifacts")
    phase = models.ForeignKey("runs.Phase", on_delete=models.SET_NULL, null=True, blank=True, related_name="artifacts")
    name = models.CharField(max_length=255)
    media_type = models.CharField(max_length=100)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    # Set when the bytes are in our store; empty for an artifact kept elsewhere (``location``).
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, null=True, blank=True, related_name="artifacts")
    location = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "-id"])]

    @property
    def stored(self) -> bool:
        """Whether the bytes are in our store (else the executor keeps them at ``location``)."""
        return self.blob_id is not None

    def __str__(self) -> str:
        return self.name
