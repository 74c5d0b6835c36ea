"""Content-Security-Policy on every response (Django 5.2 has none built in).

Scripts come only from our own origin: no inline script, no event-handler attribute, no
``javascript:`` URL, no ``eval`` (htmx runs with ``allowEval=false``, see ``base.html``). An
injected ``<script>`` therefore does not run even where escaping was forgotten.

Styles come from our own origin too, plus one per-response nonce: CodeMirror builds its theme
into a ``<style>`` element at run time and labels it with the nonce it is given
(``data-csp-nonce`` on the editor's textarea). A nonce rather than ``'unsafe-inline'`` keeps
injected ``style`` attributes and ``<style>`` elements inert, so markup cannot restyle the
page (fake buttons over real ones). Pages therefore carry no ``style="…"`` attributes; their
layout lives in ``static/css/app.css``.

``form-action 'self'`` also applies to redirects after a form post: the identity provider's
origin (OIDC_ISSUER) is added, since signing in and out post a form that redirects there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

HEADER = "Content-Security-Policy"


def policy(nonce: str) -> str:
    """The policy text for one response whose inline ``<style>`` elements carry ``nonce``."""
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": f"'self' 'nonce-{nonce}'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "font-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": " ".join(["'self'", *_idp_origin()]),
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def _idp_origin() -> list[str]:
    parts = urlsplit(settings.OIDC_ISSUER or "")
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme in ("http", "https") and parts.netloc else []


class ContentSecurityPolicyMiddleware:
    """Give each request a fresh nonce (``request.csp_nonce``) and each response the policy.

    A response that already carries the header (a view that needs a different policy) keeps
    its own.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        # 128 random bits, fresh per response, as CSP requires of a nonce.
        request.csp_nonce = secrets.token_urlsafe(16)  # type: ignore[attr-defined]
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = policy(request.csp_nonce)  # type: ignore[attr-defined]
        return response
