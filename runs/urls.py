from django.urls import path

from runs import console_views, log_views, views

app_name = "runs"
urlpatterns = [
    path("", console_views.workspace_home, name="overview"),
    path("jobs/<slug:job>/grid/", console_views.job_grid, name="job_grid"),
    path("jobs/<slug:job>/pause/", console_views.job_pause, name="job_pause"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/<slug:job>/", views.job_detail, name="job_detail"),
    path("jobs/<slug:job>/edit/", views.job_edit, name="job_edit"),
    path("jobs/<slug:job>/trigger/", views.job_trigger, name="job_trigger"),
    path("jobs/<slug:job>/versions/<int:number>/", views.job_version, name="job_version"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:run_id>/", log_views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/log/", log_views.run_log, name="run_log"),
    path("runs/<int:run_id>/log/download/", log_views.run_log_download, name="run_log_download"),
    path("runs/<int:run_id>/cancel/", views.run_cancel_view, name="run_cancel"),
    path("runs/<int:run_id>/rerun/", views.run_rerun_view, name="run_rerun"),
]
