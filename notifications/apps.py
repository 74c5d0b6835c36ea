from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Subscribe to the runs app's seam: it calls the hook when a run reaches its final state.
        from notifications.services import notifications_for_settled_run
        from runs.hooks import RUN_SETTLED

        if notifications_for_settled_run not in RUN_SETTLED:
            RUN_SETTLED.append(notifications_for_settled_run)
