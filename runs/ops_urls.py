from django.urls import path

from runs import ops_api

urlpatterns = [
    path("openapi.json", ops_api.openapi, name="ops_openapi"),
    path("runs", ops_api.runs_collection, name="ops_runs"),
    path("runs/<int:run_id>", ops_api.run_detail, name="ops_run"),
    path("runs/<int:run_id>/events", ops_api.events_dispatch, name="ops_run_events"),
    path("runs/<int:run_id>/cancel", ops_api.cancel, name="ops_run_cancel"),
    path("runs/<int:run_id>/rerun", ops_api.rerun, name="ops_run_rerun"),
    path("claim", ops_api.claim, name="ops_claim"),
    path("phases/<int:phase_id>/heartbeat", ops_api.heartbeat, name="ops_heartbeat"),
    path("phases/<int:phase_id>/artifacts", ops_api.artifacts, name="ops_artifacts"),
    path("phases/<int:phase_id>/complete", ops_api.complete, name="ops_complete"),
]
