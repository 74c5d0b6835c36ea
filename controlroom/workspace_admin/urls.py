"""Under ``w/<workspace>/settings/``: the workspace admin pages."""

from django.urls import path

from controlroom.workspace_admin import views_audit, views_connections, views_groups, views_members, views_settings

app_name = "workspace_admin"
urlpatterns = [
    path("", views_settings.workspace_settings, name="settings"),
    path("members/", views_members.member_list, name="members"),
    # <str:>, parsed by id_parse in the view: a number too large for the database is a 404, not a 500.
    path("members/<str:member>/role/", views_members.member_role, name="member_role"),
    path("members/<str:member>/remove/", views_members.member_delete, name="member_remove"),
    path("groups/", views_groups.group_list, name="groups"),
    path("audit/", views_audit.audit_log, name="audit"),
    path("audit/verify/", views_audit.audit_verify_view, name="audit_verify"),
    path("audit/export.csv", views_audit.audit_export, name="audit_export"),
    path("connections/", views_connections.connection_list, name="connections"),
    path("connections/new/<str:kind>/", views_connections.connection_new, name="connection_new"),
    path("connections/<str:connection>/", views_connections.connection_edit, name="connection_edit"),
    path("connections/<str:connection>/delete/", views_connections.connection_remove, name="connection_remove"),
    path("connections/<str:connection>/default/", views_connections.connection_default, name="connection_default"),
    path("connections/<str:connection>/test/", views_connections.connection_probe, name="connection_test"),
    path("secrets/", views_connections.secret_list, name="secrets"),
    path("secrets/<str:secret>/", views_connections.secret_edit, name="secret_edit"),
    path("secrets/<str:secret>/delete/", views_connections.secret_remove, name="secret_remove"),
]
