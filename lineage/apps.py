from django.apps import AppConfig


class LineageConfig(AppConfig):
    """OpenLineage events of runs and phases, delivered by a worker (lineage/delivery.py)."""

    name = "lineage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lineage.delivery import kick_after_settle
        from runs.hooks import RUN_SETTLED

        RUN_SETTLED.append(kick_after_settle)
