"""The table pages (``/w/<workspace>/tables/``), the lineage pages (``/w/<workspace>/lineage/``)
and the table API (``/api/v1/workspaces/<workspace>/tables``), included once from
``controlroom/urls.py``."""

from django.urls import path

from lakehouse import api, lineage_views, superset_views, views

app_name = "lakehouse"
urlpatterns = [
    path("w/<slug:workspace>/tables/", views.table_index, name="table_list"),
    path("w/<slug:workspace>/tables/<int:table_id>/", views.table_detail, name="table_detail"),
    path("w/<slug:workspace>/tables/<int:table_id>/preview/", views.table_preview, name="table_preview"),
    path("w/<slug:workspace>/tables/<int:table_id>/superset/", superset_views.table_publish,
         name="table_superset_publish"),
    path("w/<slug:workspace>/lineage/table/<int:table_id>/", lineage_views.lineage_table, name="lineage_table"),
    path("w/<slug:workspace>/lineage/job/<slug:job>/", lineage_views.lineage_job, name="lineage_job"),
    path("api/v1/workspaces/<slug:workspace>/tables", api.tables, name="api_tables"),
    path("api/v1/workspaces/<slug:workspace>/tables/<str:table_id>", api.table, name="api_table"),
]
