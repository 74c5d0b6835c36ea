from django import forms
from django.contrib import admin

from controlroom.admin_audit import AuditedModelAdmin
from controlroom.services import ServiceError
from runs.git_urls import git_file_protocol_allowed, git_url_check
from runs.models import GitDelivery, GitSource, Job, JobVersion, Run


@admin.register(Job)
class JobAdmin(AuditedModelAdmin):
    list_display = ("slug", "workspace", "current_version", "updated_at")


@admin.register(JobVersion)
class JobVersionAdmin(AuditedModelAdmin):
    list_display = ("job", "number", "spec_hash", "git_sha", "created_at")

    def has_change_permission(self, request, obj=None) -> bool:  # versions are immutable
        return False


@admin.register(Run)
class RunAdmin(AuditedModelAdmin):
    list_display = ("id", "job", "workspace", "environment", "status", "created_at")
    list_filter = ("status", "workspace")


class GitSourceAdminForm(forms.ModelForm):
    """Runs the one git URL check (runs/git_urls.py) on the URL; the model's clean checks that
    the webhook secret is a reference of the same workspace."""

    class Meta:
        model = GitSource
        fields = ("workspace", "url", "branch", "folder", "webhook_secret", "run_on_push")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["url"].help_text = ("https://host/path, ssh://[user@]host/path or user@host:path"
                                        + (", or file:///path" if git_file_protocol_allowed() else "") + ".")

    def clean_url(self) -> str:
        try:
            return git_url_check(self.cleaned_data.get("url", ""))
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(GitSource)
class GitSourceAdmin(AuditedModelAdmin):
    form = GitSourceAdminForm
    list_display = ("workspace", "url", "branch", "folder", "run_on_push", "last_synced_sha", "last_synced_at")
    readonly_fields = ("last_synced_sha", "last_synced_at", "last_error")


@admin.register(GitDelivery)
class GitDeliveryAdmin(AuditedModelAdmin):
    """Push deliveries and what their sync did; written only by the webhook and its worker."""

    list_display = ("received_at", "source", "delivery_id", "sha", "status")
    list_filter = ("status",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
