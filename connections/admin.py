from django.contrib import admin

from connections.models import Connection, SecretRef


@admin.register(SecretRef)
class SecretRefAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace", "source", "locator")
    list_filter = ("workspace", "source")


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace", "environment", "kind")
    list_filter = ("workspace", "kind")
