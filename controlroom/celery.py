"""The Celery app. Messages are only wake-ups: the database row is the truth."""

from __future__ import annotations

import os

from celery import Celery

from controlroom import broker, worker_beat  # noqa: F401  (worker_beat: signal receivers)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")

broker.register()  # before the app connects: the embedded default is controlroom-fs://
app = Celery("controlroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Versions whose fingerprint message was lost (or whose computation failed) get it on a later tick.
app.add_periodic_task(60.0, app.signature("lakehouse.tasks.table_versions_fingerprint_sweep"),
                      name="lakehouse-fingerprint-sweep")
# OpenLineage events go out shortly after they happen (lineage/delivery.py; a no-op unless configured).
app.add_periodic_task(float(os.environ.get("OPENLINEAGE_PUMP_S", "10")),
                      app.signature("lineage.tasks.openlineage_pump"), name="openlineage-pump")
