"""The Celery app. Messages are only wake-ups: the database row is the truth."""

from __future__ import annotations

import os

from celery import Celery

from controlroom import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")

broker.register()  # before the app connects: the embedded default is controlroom-fs://
app = Celery("controlroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
