from django.contrib import admin

from artifacts.models import Artifact, Blob
from controlroom.admin_audit import AuditedModelAdmin

admin.site.register(Blob, AuditedModelAdmin)


@admin.register(Artifact)
class ArtifactAdmin(AuditedModelAdmin):
    list_display = ("name", "workspace", "run", "media_type", "blob", "created_at")
    list_filter = ("workspace", "media_type")
