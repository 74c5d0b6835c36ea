from django.apps import AppConfig


class ControlroomConfig(AppConfig):
    name = "controlroom"
    verbose_name = "Control Room platform"
