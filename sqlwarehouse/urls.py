from django.urls import path

from lakehouse import superset_views
from sqlwarehouse import saved_views, schema_views, views, workbench_views

app_name = "sqlwarehouse"
urlpatterns = [
    path("", views.editor, name="editor"),
    path("run/", workbench_views.editor_run, name="editor_run"),
    path("format/", workbench_views.sql_format, name="sql_format"),
    path("executions/<int:execution_id>/", views.execution, name="execution"),
    path("executions/<int:execution_id>/status/", views.execution_status, name="execution_status"),
    path("executions/<int:execution_id>/cancel/", views.execution_cancel, name="execution_cancel"),
    path("executions/<int:execution_id>/rows.json", views.execution_rows, name="execution_rows"),
    path("executions/<int:execution_id>/export.<str:fmt>", views.execution_export, name="execution_export"),
    path("history/", views.history, name="history"),
    # Saved queries (saved_views): list, detail with versions/diff, chart save.
    path("saved/", saved_views.saved_list, name="saved"),
    path("saved/<int:saved_id>/", saved_views.saved_detail, name="saved_detail"),
    path("saved/<int:saved_id>/versions/<int:number>/", saved_views.saved_version, name="saved_version"),
    path("saved/<int:saved_id>/chart/", saved_views.saved_chart, name="saved_chart"),
    path("saved/<int:saved_id>/superset/", superset_views.saved_query_publish, name="saved_superset_publish"),
    # Schema browser (schema_views): page, lazy tree fragments, completion JSON, refresh.
    path("schema/", schema_views.schema_browser, name="schema"),
    path("schema/<int:connection_id>/tables/", schema_views.schema_tables, name="schema_tables"),
    path("schema/<int:connection_id>/completion.json", schema_views.schema_completion, name="schema_completion"),
    path("schema/<int:connection_id>/refresh/", schema_views.schema_refresh, name="schema_refresh"),
]
