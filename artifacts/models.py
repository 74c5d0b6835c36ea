"""Content-addressed blobs and the artifact records that point at them."""

from __future__ import annotations

from django.db import models

from controlroom.models import Workspace


class Blob(models.Model):
    """Bytes stored once under their sha256, shared by every artifact with that content."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    # Empty when the bytes are in our artifact store; otherwise where an executor keeps them.
    location = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256


class Artifact(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="artifacts")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, null=True, blank=True, related_name="artifacts")
    phase = models.ForeignKey("runs.Phase", on_delete=models.SET_NULL, null=True, blank=True, related_name="artifacts")
    name = models.CharField(max_length=255)
    media_type = models.CharField(max_length=100)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="artifacts")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "-id"])]

    @property
    def sha256(self) -> str:
        return self.blob_id

    def __str__(self) -> str:
        return self.name
