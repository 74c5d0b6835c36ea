from django.apps import AppConfig


class ControlroomConfig(AppConfig):
    name = "controlroom"
    verbose_name = "Control Room platform"

    def ready(self) -> None:
        from controlroom import signals, sso  # noqa: F401 (sso: its sign-on receiver)

        signals.connect()
