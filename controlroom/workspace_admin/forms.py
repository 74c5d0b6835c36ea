"""Forms of the workspace admin pages: they parse and range-check input; the services decide."""

from __future__ import annotations

from django import forms

from controlroom.ids import id_parse
from controlroom.models import Role
from controlroom.workspace_admin import services
from controlroom.workspace_admin.selectors import AuditFilter


class InviteForm(forms.Form):
    """A new user: username, optional e-mail address, role."""

    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False, max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class AddMemberForm(forms.Form):
    """An existing user, by username."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class WorkspaceSettingsForm(forms.Form):
    """The workspace's limits and prod rule, each within a sane range (a number too large for
    any integer column is a field error, not a database error)."""

    sql_row_cap = forms.IntegerField(
        label="SQL row cap", min_value=1, max_value=services.SQL_ROW_CAP_MAX,
        help_text="Rows a SQL editor result keeps; the rest is cut (and the page says so).")
    sql_timeout_s = forms.IntegerField(
        label="SQL timeout (seconds)", min_value=1, max_value=services.SQL_TIMEOUT_MAX_S,
        help_text="Statement timeout of the SQL editor.")
    max_concurrent_runs = forms.IntegerField(
        label="Concurrent runs", min_value=1, max_value=services.CONCURRENT_RUNS_MAX, required=False,
        help_text="Runs of this workspace at once, all jobs together. Empty: no limit.")
    operators_run_in_prod = forms.BooleanField(
        label="Operators may trigger runs in prod", required=False,
        help_text="Unticked: only admins trigger runs in prod.")


class AuditFilterForm(forms.Form):
    """The audit log's filters and its page (``before``: the id the page starts below)."""

    actor = forms.CharField(required=False, max_length=200)
    action = forms.CharField(required=False, max_length=64, help_text="A prefix: membership. finds all of them.")
    target_type = forms.CharField(required=False, max_length=64, label="Target type")
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    since = forms.DateTimeField(required=False, label="From", help_text="YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC",
                                widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD"}))
    until = forms.DateTimeField(required=False, label="Until", help_text="Exclusive.",
                                widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD"}))
    before = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput)

    def clean_before(self) -> int | None:
        raw = self.cleaned_data["before"]
        if not raw:
            return None
        before = id_parse(raw)
        if before is None:
            raise forms.ValidationError("That page does not exist: start from the newest events.")
        return before

    def clean(self) -> dict:
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise forms.ValidationError("The time range is empty: From must be before Until.")
        return data

    def audit_filter(self) -> AuditFilter:
        """The filter of a valid form."""
        data = self.cleaned_data
        return AuditFilter(
            actor=data["actor"].strip(), action=data["action"].strip(), target_type=data["target_type"].strip(),
            target_id=data["target_id"].strip(), since=data["since"], until=data["until"],
        )
