from django.contrib import admin

from artifacts.models import Artifact, Blob

admin.site.register(Blob)


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace", "run", "media_type", "blob", "created_at")
    list_filter = ("workspace", "media_type")
