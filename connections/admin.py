from django import forms
from django.conf import settings
from django.contrib import admin

from connections.models import Connection, SecretRef
from controlroom.admin_audit import AuditedModelAdmin


class SecretRefAdminForm(forms.ModelForm):
    """The model's clean applies the reference rules; the help text states them as configured."""

    class Meta:
        model = SecretRef
        fields = ("workspace", "name", "source", "locator")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        folders = ", ".join(str(d) for d in settings.SECRET_FILE_DIRS) or "none configured"
        self.fields["locator"].help_text = (f"A variable name starting with {settings.SECRET_ENV_PREFIX}, or the "
                                            f"absolute path of a file inside {folders}.")


@admin.register(SecretRef)
class SecretRefAdmin(AuditedModelAdmin):
    form = SecretRefAdminForm
    list_display = ("name", "workspace", "source", "locator")
    list_filter = ("workspace", "source")


@admin.register(Connection)
class ConnectionAdmin(AuditedModelAdmin):
    list_display = ("name", "workspace", "environment", "kind")
    list_filter = ("workspace", "kind")
