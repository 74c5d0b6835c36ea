from django.apps import AppConfig


class LakehouseConfig(AppConfig):
    name = "lakehouse"

    def ready(self) -> None:
        """Delta tables a phase wrote become readable in Trino (``lakehouse.trino_publish``)."""
        from lakehouse.trino_publish import after_phase
        from runs.executors import AFTER_SUCCESS

        if after_phase not in AFTER_SUCCESS:
            AFTER_SUCCESS.append(after_phase)
