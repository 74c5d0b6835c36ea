from django.contrib import admin

from controlroom.admin_audit import AuditedModelAdmin
from lakehouse.models import Table, TableEdge, TableVersion


@admin.register(Table)
class TableAdmin(AuditedModelAdmin):
    list_display = ("name", "namespace", "catalog_name", "format", "workspace", "environment", "updated_at")
    list_filter = ("workspace", "format")
    search_fields = ("name", "namespace")


@admin.register(TableVersion)
class TableVersionAdmin(AuditedModelAdmin):
    list_display = ("table", "version", "operation", "row_count", "run", "attempt", "committed_at")
    list_filter = ("operation",)
    raw_id_fields = ("table", "run", "phase")


@admin.register(TableEdge)
class TableEdgeAdmin(AuditedModelAdmin):
    list_display = ("run", "phase", "table_version", "direction")
    raw_id_fields = ("run", "phase", "table_version")
