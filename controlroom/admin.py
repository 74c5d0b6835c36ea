"""The platform's admin pages. Every write through them is audited (controlroom/admin_audit.py),
including the admins that other packages register (users, groups, e-mail addresses, Celery's
schedules and results), which are registered again here as audited subclasses."""

from __future__ import annotations

from functools import partial
from typing import Any

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_celery_results.models import GroupResult, TaskResult

from controlroom.admin_audit import AuditedAdminMixin, AuditedModelAdmin, register_audited
from controlroom.admin_services import admin_object_save
from controlroom.models import ApiToken, AuditEvent, Environment, IdpGroupMapping, Membership, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(AuditedModelAdmin):
    list_display = ("slug", "name", "operators_run_in_prod", "created_at")

    def save_model(self, request: HttpRequest, obj: Workspace, form: Any, change: bool) -> None:
        def write() -> None:
            obj.save()
            if not change:  # a workspace always has its three environments (as workspace_create makes)
                Environment.objects.bulk_create([Environment(workspace=obj, name=name)
                                                 for name in Environment.Name.values], ignore_conflicts=True)

        admin_object_save(actor=request.user, obj=obj, write=write, secret_fields=self.audit_secret_fields)


admin.site.register(Environment, AuditedModelAdmin)


@admin.register(Membership)
class MembershipAdmin(AuditedModelAdmin):
    list_display = ("user", "workspace", "role")
    list_filter = ("workspace", "role")


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedModelAdmin):
    list_display = ("name", "workspace", "role", "prefix", "created_at", "expires_at", "revoked_at")
    readonly_fields = ("token_hash", "prefix")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a token's value is made and shown once on the workspace's token page


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the log is written by services only (the one admin that is not audited, since
    it cannot write)."""

    list_display = ("created_at", "workspace", "actor_label", "action", "target_type", "target_id", "request_id")
    list_filter = ("workspace", "action")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    """Users, with the change-password page audited too (it saves through its own form, not
    save_model). The password hash is never recorded, only that it changed."""

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        user = self.get_object(request, unquote(id)) if request.method == "POST" else None
        view = partial(super().user_change_password, request, id, form_url)
        if user is None:  # a GET, or a user that does not exist (the view answers 404)
            return view()
        return admin_object_save(actor=request.user, obj=user, write=view, action="admin.password",
                                 secret_fields=self.audit_secret_fields)


class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    """Groups and their permissions."""


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), AuditedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, AuditedGroupAdmin)
# Registered by packages listed before us in INSTALLED_APPS, so already there to wrap.
for _model in (EmailAddress, TaskResult, GroupResult, PeriodicTask, ClockedSchedule, CrontabSchedule,
               SolarSchedule, IntervalSchedule):
    register_audited(_model)
# Single sign-on is configured from the environment (OIDC_*), not from SocialApp rows; the sign-on
# links (subject to user) stay visible and audited, and tokens are not stored (SOCIALACCOUNT_STORE_TOKENS).
admin.site.unregister(SocialApp)
admin.site.unregister(SocialToken)
register_audited(SocialAccount)
admin.site.register(IdpGroupMapping, AuditedModelAdmin)
