from django.urls import path

from runs import api

urlpatterns = [
    path("jobs", api.jobs, name="api_jobs"),
    path("jobs/<slug:job>", api.job, name="api_job"),
    path("jobs/<slug:job>/runs", api.job_runs, name="api_job_runs"),
    path("runs", api.runs, name="api_runs"),
    path("runs/<str:run_id>", api.run, name="api_run"),
    path("runs/<str:run_id>/events", api.run_events, name="api_run_events"),
]
