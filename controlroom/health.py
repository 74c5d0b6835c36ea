"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (what it needs answers)
and ``/metrics`` (Prometheus; never public: a bearer token or an allowed network)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

log = logging.getLogger(__name__)
BROKER_TIMEOUT_S = 3.0


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving (a liveness probe: no dependency is asked)."""
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    from controlroom.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)


def _artifact_store() -> None:
    from artifacts.storage import get_store

    get_store().check()


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "broker": _broker, "artifact_store": _artifact_store}


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Whether this process can do its work: each dependency's state, 503 if any is down. The
    reason goes to the log; the answer names only the failing part (it is unauthenticated)."""
    results: dict[str, Any] = {}
    for name, check in CHECKS.items():
        began = time.monotonic()
        try:
            check()
            results[name] = {"ok": True, "ms": round((time.monotonic() - began) * 1000, 1)}
        except Exception as exc:  # any failure means not ready; the detail is for the log
            log.warning("readiness: %s is not reachable: %r", name, exc)
            results[name] = {"ok": False, "ms": round((time.monotonic() - began) * 1000, 1),
                             "error": f"{name} not reachable"}
    ready = all(r["ok"] for r in results.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": results}, status=200 if ready else 503)


def _client_address(request: HttpRequest) -> str:
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    hops = settings.ALLAUTH_TRUSTED_PROXY_COUNT  # the same rule as the login limits' (TRUSTED_PROXY_COUNT)
    if hops and len(forwarded) >= hops:
        return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "")


def metrics_allowed(request: HttpRequest) -> bool:
    """A scraper with METRICS_TOKEN as its bearer token, or from METRICS_ALLOWED_NETWORKS."""
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
        return True
    if settings.METRICS_ALLOWED_NETWORKS:
        try:
            address = ipaddress.ip_address(_client_address(request))
        except ValueError:
            return False
        return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)
    return False


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition (controlroom/metrics.py). Anyone else gets a 404, as if there
    were nothing here; with neither a token nor networks configured, nobody may read it."""
    if not metrics_allowed(request):
        raise Http404
    from prometheus_client import CONTENT_TYPE_LATEST

    from controlroom.metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


class ProbeMiddleware:
    """Answers the probes and the scraper before anything reads the Host header: the kubelet and
    Prometheus call pods by address (``Host: 10.1.2.3:8000``) or service name (``web:8000``),
    which ALLOWED_HOSTS need not list, and these answers do not depend on the host (the token
    or network rule guards /metrics). Also spares them the HTTPS redirect and the session."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info)
        if view is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        from django.urls import resolve

        request.resolver_match = resolve(request.path_info)  # the latency metric's view label
        try:
            return view(request)
        except Http404:
            from django.http import HttpResponseNotFound

            return HttpResponseNotFound("Not Found", content_type="text/plain")
