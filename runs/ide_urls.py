"""The IDE API's paths; controlroom/urls.py mounts them under /api/v1/ and /v1/."""

from django.urls import path

from runs import ide_api
from sqlwarehouse import compute_api

urlpatterns = [
    path("openapi.json", ide_api.openapi, name="openapi"),
    path("compute/sql", compute_api.compute_sql, name="compute_sql"),
    path("compute/sql/<int:execution_id>", compute_api.compute_sql_status, name="compute_sql_status"),
    path("compute/job", ide_api.compute_job, name="compute_job"),
    path("compute/job/<int:run_id>", ide_api.run_status, name="compute_job_status"),
    path("pipelines/run", ide_api.pipeline_run, name="pipeline_run"),
    path("pipelines/run/<int:run_id>", ide_api.run_status, name="pipeline_run_status"),
]
