"""The table registry: tables per workspace and environment, the versions phases committed, and
lineage edges (which run read or wrote which version).

A table is addressed by (catalog connection name, namespace, name) inside one workspace and
environment; the catalog itself (Iceberg metadata, Delta log) stays the truth about the data,
these rows are the control plane's record of who made each version and what it holds."""

from __future__ import annotations

from django.db import models

from controlroom.models import Environment, Workspace


class Table(models.Model):
    class Format(models.TextChoices):
        ICEBERG = "iceberg", "Iceberg"
        DELTA = "delta", "Delta"
        # Relations a dbt phase built on a DuckDB connection (catalog: the connection's name) or on
        # Trino (catalog: the Trino catalog); a version is one build, its id the build's time in µs.
        DUCKDB = "duckdb", "DuckDB"
        TRINO = "trino", "Trino"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tables")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="tables")
    catalog_name = models.CharField(max_length=64, default="lakehouse",
                                    help_text="The catalog connection's name; 'lakehouse' is the embedded default.")
    namespace = models.CharField(max_length=128)
    name = models.CharField(max_length=128)
    format = models.CharField(max_length=8, choices=Format.choices)
    location = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "environment", "catalog_name", "namespace", "name"],
                                    name="uniq_lakehouse_table"),
        ]
        ordering = ["catalog_name", "namespace", "name"]

    def __str__(self) -> str:
        return f"{self.catalog_name}.{self.namespace}.{self.name} ({self.format})"

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}"


class TableVersion(models.Model):
    class Operation(models.TextChoices):
        CREATE = "create", "create"
        APPEND = "append", "append"
        OVERWRITE = "overwrite", "overwrite"
        UPSERT = "upsert", "upsert"
        MERGE = "merge", "merge"
        OPTIMIZE = "optimize", "optimize"
        VACUUM = "vacuum", "vacuum"

    table = models.ForeignKey(Table, on_delete=models.CASCADE, related_name="versions")
    version = models.BigIntegerField(help_text="Iceberg snapshot id or Delta version.")
    operation = models.CharField(max_length=16, choices=Operation.choices)
    schema = models.JSONField(default=list, blank=True)  # [{"name", "type", "nullable"}]
    row_count = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    # The canonical content fingerprint (lakehouse.fingerprint); blank for maintenance operations,
    # and blank until the task lakehouse.tasks.table_version_fingerprint fills it after the commit.
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    run = models.ForeignKey("runs.Run", on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="table_versions")
    phase = models.ForeignKey("runs.Phase", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="table_versions")
    attempt = models.IntegerField(default=0)
    git_sha = models.CharField(max_length=40, blank=True, default="")
    committed_at = models.DateTimeField()
    # Freshness: the source's clock up to which this version reflects every change (an ``ingest``
    # phase's read bound; a table computed from inputs takes the oldest of theirs). Empty when no
    # ingested source feeds it.
    source_as_of = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["table", "version"], name="uniq_lakehouse_table_version")]
        ordering = ["table_id", "-committed_at", "-id"]
        indexes = [models.Index(fields=["table", "-committed_at"])]

    def __str__(self) -> str:
        return f"{self.table} @ {self.version}"

    @property
    def source_lag_s(self) -> float | None:
        """Seconds between the source state this version holds and its commit (freshness at commit)."""
        if self.source_as_of is None:
            return None
        return max(0.0, (self.committed_at - self.source_as_of).total_seconds())

    @property
    def fingerprint_pending(self) -> bool:
        """Whether the fingerprint is still to be computed (maintenance operations never get one)."""
        return not self.fingerprint and self.operation not in MAINTENANCE


# Operations that keep the content (compaction, file clean-up): no fingerprint is recorded.
MAINTENANCE = (TableVersion.Operation.OPTIMIZE, TableVersion.Operation.VACUUM)


class TableEdge(models.Model):
    """Lineage: ``run``'s phase ``phase`` read or wrote ``table_version``."""

    class Direction(models.TextChoices):
        READ = "read", "read"
        WRITE = "write", "write"

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="table_edges")
    phase = models.ForeignKey("runs.Phase", on_delete=models.CASCADE, null=True, blank=True,
                              related_name="table_edges")
    table_version = models.ForeignKey(TableVersion, on_delete=models.CASCADE, related_name="edges")
    direction = models.CharField(max_length=8, choices=Direction.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "phase", "table_version", "direction"],
                                    name="uniq_lakehouse_table_edge"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.direction} {self.table_version}"


from lakehouse.superset_models import SupersetPublication  # noqa: E402,F401  (registered with this app)
