"""Platform core: workspaces, environments, memberships and roles, API tokens, audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    ANALYST = "analyst", "Analyst"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


MAX_DB_ID = 2**63 - 1  # the largest id a database integer holds; a larger one names nothing

ROLE_RANK = {Role.VIEWER: 1, Role.ANALYST: 2, Role.OPERATOR: 3, Role.ADMIN: 4}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(minimum)]


class Workspace(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    sql_row_cap = models.PositiveIntegerField(
        default=1_000_000, help_text="Rows a SQL editor result keeps; the rest is cut (and the page says so).")
    sql_timeout_s = models.PositiveIntegerField(default=300, help_text="Statement timeout of the SQL editor.")
    operators_run_in_prod = models.BooleanField(
        default=False, help_text="Let operators trigger runs in prod (by default only admins may).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Environment(models.Model):
    class Name(models.TextChoices):
        DEV = "dev", "dev"
        STAGE = "stage", "stage"
        PROD = "prod", "prod"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=16, choices=Name.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_env_per_workspace")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.workspace.slug}/{self.name}"


class Membership(models.Model):
    class Source(models.TextChoices):
        MANUAL = "manual", "Granted by hand"  # kept as it is by every single sign-on
        IDP = "idp", "From identity provider groups"  # brought in line with the groups at each sign-on

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="uniq_member")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} as {self.role}"


class IdpGroupMapping(models.Model):
    """An identity provider group whose members get ``role`` in ``workspace`` at sign-on."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="idp_groups")
    group = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "group"], name="uniq_idp_group")]
        ordering = ["group"]

    def __str__(self) -> str:
        return f"{self.group} → {self.workspace.slug} as {self.role}"


class SsoSession(models.Model):
    """One signed-in browser session that came through single sign-on: the IdP's refresh token
    (encrypted with a key derived from SECRET_KEY), with which the session is re-checked at the
    IdP every OIDC_SESSION_RECHECK_S (controlroom/sso_session.py). Kept apart from the session
    data, so a request that saves the session cannot write back an older token."""

    key = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_sessions")
    refresh_token = models.TextField(blank=True)
    checked_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"SSO session of {self.user_id} checked {self.checked_at:%Y-%m-%d %H:%M:%S}"


class MetricCount(models.Model):
    """A counter of rare events that any process may bump (a lease expiry, a retry, a failed
    artifact upload): kept in the database, so /metrics counts what every worker and container
    did, and counts survive restarts (controlroom/metrics.py)."""

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=400, default="")  # sorted k=v pairs, tab-separated
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="uniq_metric_count")]

    def __str__(self) -> str:
        return f"{self.name}{{{self.labels}}} = {self.value}"


class WorkerBeat(models.Model):
    """A Celery worker's sign of life, written every WORKER_BEAT_S by the worker itself."""

    hostname = models.CharField(max_length=200, primary_key=True)
    queues = models.CharField(max_length=200, default="")
    seen_at = models.DateTimeField()
    started_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} ({self.queues}) seen {self.seen_at:%H:%M:%S}"


# What an API token may do, beside its role (both must allow a request): read or change jobs
# and runs, act as an executor (claim, heartbeat, events, artifacts, complete), read or run SQL,
# and act as an admin (without it a token's role counts as operator at most). The IDE API's own
# (runs/ide_api.py): compute:sql runs SQL and reads those executions, compute:job triggers jobs
# and pipelines and reads those runs; sql:write and runs:write allow the same requests, so tokens
# made before these scopes existed keep what they could do.
TOKEN_SCOPES = ("runs:read", "runs:write", "executor", "sql:read", "sql:write", "admin", "compute:sql",
                "compute:job")


def all_scopes() -> list[str]:
    return list(TOKEN_SCOPES)


class ApiToken(models.Model):
    """A workspace-scoped bearer token. Only its sha256 is stored; the value is shown once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices)
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: the token does not expire.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=all_scopes, help_text="Some of TOKEN_SCOPES.")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """Append-only, hash-chained per workspace: each row's hash covers its content and the
    previous row's hash, so an edited or deleted row breaks the chain; ``AuditHead`` anchors the
    chain's end, so deleting the newest rows is seen too."""

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, null=True, related_name="audit_events")
    # Position in its chain (1, 2, ...): a gap or a missing tail is visible without the hashes.
    seq = models.PositiveBigIntegerField(default=0)
    # The acting user's id as recorded: a plain number, not a foreign key, so deleting the user
    # later changes nothing that the hash covers.
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "-id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id} by {self.actor_label}"


class AuditHead(models.Model):
    """The newest event of one audit chain (a workspace's, or the platform's for ``chain``
    "platform"), sealed with a keyed MAC: rows deleted from the chain's end leave a head that
    no longer matches, and without the key a matching head cannot be forged."""

    chain = models.CharField(max_length=32, unique=True)  # "ws:<id>" or "platform"
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    mac = models.CharField(max_length=64)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.chain} at {self.seq}"
