"""Single sign-on through an OpenID Connect provider (django-allauth's ``openid_connect``).

- A person is made at their first sign-on, keyed by the IdP's subject (allauth's SocialAccount
  uid), never by the e-mail, which can change. Their username is derived once from
  ``preferred_username`` (made fit for an engine identity: Trino's access rules accept
  ``[A-Za-z0-9_][A-Za-z0-9._@-]*``) and never changes after, so their engine identity is stable.
- Their memberships follow their groups: at each sign-on the groups claim (OIDC_GROUPS_CLAIM,
  from the ID token or userinfo) goes through each workspace's group mappings; a membership that
  came from groups is added, changed or removed to match, one granted by hand is kept; each
  change is audited with the groups that caused it. Someone whose groups map to nothing sees a
  page that says so.
- SSO-only (SSO_ONLY): no local password works but the break-glass account's
  (``SsoOnlyBackend``), and the login page shows only the IdP's button.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any
from urllib.parse import urlencode

import requests
from allauth.account.auth_backends import AuthenticationBackend
from allauth.account.signals import user_logged_in
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.urls import reverse

from connections.vault import VaultError, vault_read
from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import IdpGroupMapping, Membership, Role, Workspace
from controlroom.sso_session import sso_session_close, sso_session_open

log = logging.getLogger(__name__)
ROLE_ORDER = {Role.VIEWER: 0, Role.ANALYST: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
_UNFIT = re.compile(r"[^A-Za-z0-9._@-]+")


def engine_username(preferred: str, subject: str) -> str:
    """A username an engine accepts as an identity, from the IdP's preferred name (or its subject)."""
    name = _UNFIT.sub("-", preferred or "").strip(".-@")[:50]
    if len(name) < 3 or not re.match(r"[A-Za-z0-9_]", name):  # little of it was fit: the subject's digest
        name = "sso-" + hashlib.sha256(subject.encode()).hexdigest()[:10]
    return name


def groups_of(extra_data: dict[str, Any]) -> list[str]:
    """The groups claim of a sign-on, from userinfo or the ID token; Keycloak's '/a/b' paths kept
    as written and also without their leading slash, so either spelling can be mapped."""
    claim = settings.OIDC_GROUPS_CLAIM
    found: list[str] = []
    for source in (extra_data.get("userinfo") or {}, extra_data.get("id_token") or {}):
        value = source.get(claim)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            found += [g for g in value if isinstance(g, str) and g]
    return sorted(set(found) | {g.lstrip("/") for g in found if g.startswith("/")})


class SsoAdapter(DefaultSocialAccountAdapter):
    """Sign-on makes the account (local sign-up stays closed) with an engine-fit username."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return True

    def list_apps(self, request: HttpRequest | None, provider: Any = None, client_id: Any = None) -> list[Any]:
        apps = super().list_apps(request, provider=provider, client_id=client_id)
        if settings.OIDC_CLIENT_SECRET_VAULT:
            for app in apps:
                if app.provider_id == "idp":
                    app.secret = client_secret()  # read now: a rotated secret works without a restart
        return apps

    def populate_user(self, request: HttpRequest, sociallogin: Any, data: dict[str, Any]) -> Any:
        user = super().populate_user(request, sociallogin, data)
        user.username = engine_username(data.get("username") or "", sociallogin.account.uid)
        return user


def memberships_sync(user: Any, groups: list[str]) -> list[dict[str, Any]]:
    """Bring the user's group-granted memberships in line with ``groups``; the changes made."""
    wanted: dict[int, tuple[str, list[str]]] = {}  # workspace id -> (highest role, the groups giving it)
    for mapping in IdpGroupMapping.objects.filter(group__in=groups):
        role, causes = wanted.get(mapping.workspace_id, (None, []))
        if role is None or ROLE_ORDER[mapping.role] > ROLE_ORDER[role]:
            role = mapping.role
        wanted[mapping.workspace_id] = (role, sorted({*causes, mapping.group}))
    changes = []
    with transaction.atomic():
        current = {m.workspace_id: m for m in Membership.objects.select_for_update().filter(user=user)}
        for workspace_id in sorted(set(wanted) | set(current)):
            membership, (role, causes) = current.get(workspace_id), wanted.get(workspace_id, (None, []))
            if membership is not None and membership.source == Membership.Source.MANUAL:
                continue  # granted by hand: kept as it is
            before = membership.role if membership is not None else None
            if role == before:
                continue
            if role is None:
                membership.delete()
            elif membership is None:
                Membership.objects.create(workspace_id=workspace_id, user=user, role=role,
                                          source=Membership.Source.IDP)
            else:
                Membership.objects.filter(pk=membership.pk).update(role=role)
            change = {"user": user.username, "before": before, "after": role, "groups": causes or groups}
            workspace = Workspace.objects.get(pk=workspace_id)
            audit_record(access=Access(workspace=workspace, role=Role.VIEWER, user=user), actor=user,
                         action="membership.sso_sync", target=user, workspace=workspace,
                         before={"role": before}, after={"role": role, "groups": change["groups"]})
            changes.append({**change, "workspace": workspace.slug})
    return changes


@receiver(user_logged_in)
def _sync_on_sign_on(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    sociallogin = kwargs.get("sociallogin")
    if sociallogin is None:
        return
    groups = groups_of(sociallogin.account.extra_data or {})
    changes = memberships_sync(user, groups)
    request.session["sso_groups"] = groups
    sso_session_open(request, user, getattr(sociallogin.token, "token_secret", "") or "")
    log.info("single sign-on", extra={"user": user.username, "groups": groups, "changes": len(changes)})


@receiver(user_logged_out)
def _forget_on_sign_out(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    if request is not None:
        sso_session_close(request)


_discovery: dict[str, dict[str, Any]] = {}


def discovery() -> dict[str, Any]:
    """The IdP's discovery document (read once per issuer); LookupError when it cannot be read."""
    issuer = settings.OIDC_ISSUER
    if not issuer:
        raise LookupError("OIDC_ISSUER is not set")
    if issuer not in _discovery:
        try:
            response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise LookupError(f"the discovery document of {issuer} cannot be read: {exc}") from None
        if not isinstance(document, dict):
            raise LookupError(f"the discovery document of {issuer} is not a JSON object")
        _discovery[issuer] = document
    return _discovery[issuer]


def client_secret() -> str:
    """Our client secret at the IdP: from Vault/OpenBao at the moment of use when
    OIDC_CLIENT_SECRET_VAULT names it (so a rotation needs no restart), else from the settings.
    A secret that cannot be read raises LookupError naming the path, never a value."""
    if not settings.OIDC_CLIENT_SECRET_VAULT:
        return settings.OIDC_CLIENT_SECRET
    path, key = settings.OIDC_CLIENT_SECRET_VAULT.split("#", 1)
    try:
        return vault_read(path, key)
    except VaultError as exc:
        log.error("the OIDC client secret cannot be read: %s", exc)
        raise LookupError(f"the OIDC client secret cannot be read from {path}#{key}") from None


def end_session_url(request: HttpRequest) -> str | None:
    """The IdP's end-session URL (from its discovery document) that returns to our login page."""
    if not settings.OIDC_ISSUER:
        return None
    try:
        endpoint = discovery().get("end_session_endpoint")
    except LookupError:
        log.warning("the identity provider's discovery document could not be read", exc_info=True)
        return None
    if not endpoint:
        return None
    back = request.build_absolute_uri(reverse("account_login"))
    return f"{endpoint}?{urlencode({'client_id': settings.OIDC_CLIENT_ID, 'post_logout_redirect_uri': back})}"


def local_login_allowed(username: str) -> bool:
    """Whether a local password may sign ``username`` in (always, unless SSO_ONLY)."""
    return not settings.SSO_ONLY or (bool(settings.SSO_BREAK_GLASS_USER) and username == settings.SSO_BREAK_GLASS_USER)


class SsoOnlyModelBackend(ModelBackend):
    """Django's password check (the admin site's login), refused in SSO-only mode but for the
    break-glass account."""

    def user_can_authenticate(self, user: Any) -> bool:
        return super().user_can_authenticate(user) and local_login_allowed(user.get_username())


class SsoOnlyAllauthBackend(AuthenticationBackend):
    """allauth's password check, refused in SSO-only mode but for break-glass (the login page
    says why earlier, in ClosedSignupAdapter.pre_authenticate)."""

    def user_can_authenticate(self, user: Any) -> bool:
        return super().user_can_authenticate(user) and local_login_allowed(user.get_username())
