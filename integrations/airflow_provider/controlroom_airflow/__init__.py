"""Control Room's Airflow provider: ``ControlRoomRunOperator`` triggers a job's run over the REST
API and waits for it to end (deferrable by default).

Import the operator from ``controlroom_airflow.operators``; this module stays free of Airflow
imports so the providers manager can read :func:`get_provider_info` cheaply."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager lists: the package and its connection type."""
    return {
        "package-name": "controlroom-airflow",
        "name": "Control Room",
        "description": "Trigger Control Room job runs and wait for them.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "controlroom", "hook-class-name": "controlroom_airflow.hooks.ControlRoomHook"},
        ],
    }
