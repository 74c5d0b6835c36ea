"""The one way a ModelAdmin writes: every save, delete, bulk delete, inline row and action goes
through the audited admin services (controlroom/admin_services.py).

Our admins subclass ``AuditedModelAdmin``; another package's admin is wrapped with
``audited(TheirAdmin)`` and registered again. ``tests/test_admin_audit.py`` walks the admin
registry, so an admin registered without this fails the suite the day it is added."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.db import models
from django.forms import BaseModelForm
from django.http import HttpRequest

from controlroom.admin_services import (
    admin_action_run,
    admin_formset_save,
    admin_object_delete,
    admin_object_save,
    admin_objects_delete,
)


class AuditedAdminMixin:
    """Put before a ModelAdmin class (``class X(AuditedAdminMixin, SomeAdmin)``): it keeps that
    admin's own save and delete logic and wraps it in the audited services."""

    # Fields recorded only as "[redacted]" (SECRET_FIELDS are always redacted).
    audit_secret_fields: tuple[str, ...] = ()

    def save_model(self, request: HttpRequest, obj: models.Model, form: BaseModelForm, change: bool) -> None:
        admin_object_save(actor=request.user, obj=obj, secret_fields=self.audit_secret_fields,
                          write=partial(super().save_model, request, obj, form, change))

    def save_related(self, request: HttpRequest, form: BaseModelForm, formsets: Any, change: bool) -> None:
        # Many-to-many values (a user's groups and permissions) are saved here, after save_model;
        # a change to them is its own "admin.change" event (inline rows audit themselves).
        admin_object_save(actor=request.user, obj=form.instance, secret_fields=self.audit_secret_fields,
                          write=partial(super().save_related, request, form, formsets, change))

    def save_formset(self, request: HttpRequest, form: BaseModelForm, formset: Any, change: bool) -> None:
        admin_formset_save(actor=request.user, formset=formset, secret_fields=self.audit_secret_fields)

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        admin_object_delete(actor=request.user, obj=obj, secret_fields=self.audit_secret_fields,
                            write=partial(super().delete_model, request, obj))

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        admin_objects_delete(actor=request.user, objects=queryset, secret_fields=self.audit_secret_fields,
                             write=partial(super().delete_queryset, request, queryset))

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[Callable, str, str]]:
        # "Delete selected" reaches delete_queryset (audited above); every other action is
        # wrapped so what it changes is recorded, whatever it does inside (update(), ...).
        actions = super().get_actions(request)
        return {name: (func if func is delete_selected else self._audited_action(func, name), name, description)
                for name, (func, _, description) in actions.items()}

    def _audited_action(self, func: Callable, name: str) -> Callable:
        @wraps(func)
        def run(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: models.QuerySet) -> Any:
            return admin_action_run(actor=request.user, name=name, queryset=queryset,
                                    secret_fields=self.audit_secret_fields,
                                    run=partial(func, modeladmin, request, queryset))

        return run


class AuditedModelAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The base class of every ModelAdmin of ours."""


def audited(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """An audited subclass of another package's ModelAdmin (keeps its forms, views and actions)."""
    return type(f"Audited{admin_class.__name__}", (AuditedAdminMixin, admin_class), {"__module__": __name__})


def register_audited(model: type[models.Model], site: admin.AdminSite = admin.site) -> None:
    """Register ``model``'s current admin again as its audited subclass."""
    admin_class = type(site._registry[model])
    if issubclass(admin_class, AuditedAdminMixin):
        return
    site.unregister(model)
    site.register(model, audited(admin_class))
