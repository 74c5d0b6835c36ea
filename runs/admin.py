from django.contrib import admin

from runs.models import Job, JobVersion, Run


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("slug", "workspace", "current_version", "updated_at")


@admin.register(JobVersion)
class JobVersionAdmin(admin.ModelAdmin):
    list_display = ("job", "number", "spec_hash", "git_sha", "created_at")

    def has_change_permission(self, request, obj=None) -> bool:  # versions are immutable
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "workspace", "environment", "status", "created_at")
    list_filter = ("status", "workspace")
