"""Request ids: accepted from X-Request-ID (when well-formed) or minted, echoed back, and
carried in a context variable so log lines and audit events can name the request. The client's
address travels the same way, read behind our proxies as allauth reads it for its limits."""

from __future__ import annotations

import contextvars
import ipaddress
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch: a trailing newline is not part of an id
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)
current_client_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_client_ip", default=None
)


def get_request_id() -> str | None:
    return current_request_id.get()


def _clean_ip(value: str) -> str | None:
    # As allauth cleans it: a port (1.2.3.4:5678, [::1]:5678) goes; anything not an address is None.
    value = value.strip()
    host, port = split_domain_port(value)
    if host and port:
        value = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: with ``TRUSTED_PROXY_COUNT`` (ALLAUTH_TRUSTED_PROXY_COUNT) = N > 0,
    the Nth address from the right of X-Forwarded-For (the one our outermost proxy added), which
    is allauth's rule for its rate limits; with 0, or a header shorter than N (a request that
    did not come through the proxies), the peer's address (REMOTE_ADDR)."""
    trusted = getattr(settings, "ALLAUTH_TRUSTED_PROXY_COUNT", 0)
    forwarded = request.headers.get("X-Forwarded-For", "")
    if trusted > 0 and forwarded:
        hops = forwarded.split(",")
        if len(hops) >= trusted:
            return _clean_ip(hops[-trusted])
    return _clean_ip(request.META.get("REMOTE_ADDR") or "")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = current_request_id.set(request_id)
        ip_token = current_client_ip.set(client_ip(request))
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
            current_client_ip.reset(ip_token)
        response[HEADER] = request_id
        return response


def get_client_ip() -> str | None:
    return current_client_ip.get()
