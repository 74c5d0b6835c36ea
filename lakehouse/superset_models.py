"""What Control Room published to Superset: per Superset connection, one row per table or saved
query, with the ids Superset gave its database, dataset and chart, so publishing again updates
those objects instead of making new ones (``lakehouse.superset``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from connections.models import Connection
from controlroom.models import Workspace


class SupersetPublication(models.Model):
    """A table or saved query as published through one ``superset`` connection."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="superset_publications")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="superset_publications")
    table = models.ForeignKey("lakehouse.Table", on_delete=models.CASCADE, null=True, blank=True,
                              related_name="superset_publications")
    saved_query = models.ForeignKey("sqlwarehouse.SavedQuery", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="superset_publications")
    database_id = models.PositiveIntegerField(help_text="Superset's id of the Trino database.")
    dataset_id = models.PositiveIntegerField(help_text="Superset's id of the dataset.")
    chart_id = models.PositiveIntegerField(null=True, blank=True, help_text="Superset's id of the chart, if any.")
    dataset_url = models.URLField(max_length=500)
    chart_url = models.URLField(max_length=500, blank=True, default="")
    published_at = models.DateTimeField()
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "table"], condition=models.Q(table__isnull=False),
                                    name="uniq_superset_publication_table"),
            models.UniqueConstraint(fields=["connection", "saved_query"],
                                    condition=models.Q(saved_query__isnull=False),
                                    name="uniq_superset_publication_saved_query"),
            models.CheckConstraint(condition=models.Q(table__isnull=False, saved_query__isnull=True)
                                   | models.Q(table__isnull=True, saved_query__isnull=False),
                                   name="superset_publication_one_subject"),
        ]
        ordering = ["-published_at"]

    def __str__(self) -> str:
        subject = f"table {self.table_id}" if self.table_id else f"saved query {self.saved_query_id}"
        return f"{subject} in Superset dataset {self.dataset_id}"
