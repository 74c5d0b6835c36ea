"""Signed webhooks: Slack-compatible JSON POSTed to the spec's URL.

The body is ``{"text": …, "blocks": […], "controlroom": {…facts}}``: Slack (and Mattermost,
Teams' Slack-compatible hooks) show ``text``/``blocks``; other receivers read ``controlroom``.
Headers ``X-Timestamp`` (Unix seconds) and ``X-Signature`` (``v0=`` + hex HMAC-SHA256 with the
secret over ``v0:{timestamp}:{body}``, Slack's signing scheme) let a receiver check that the body
is ours and fresh; ``X-Notification-Id`` is the same for every attempt, so a receiver can drop a
repeat. Redirects are never followed, the timeout is short, and hosts that resolve to link-local
(cloud metadata) or multicast addresses are refused at connect time, after DNS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import time
from urllib.parse import urlsplit, urlunsplit

from connections.models import SecretRef
from connections.services import SecretUnavailable, secret_resolve
from notifications.channels.base import Message, NotifyError
from notifications.spec import webhook_url_problem

log = logging.getLogger(__name__)
TIMEOUT_S = 5.0
SIGNATURE_VERSION = "v0"
# Instance metadata services outside the link-local range (Alibaba Cloud; AWS's IPv6 endpoint).
_METADATA = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}


def signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """The X-Signature value: ``v0=`` + hex HMAC-SHA256(secret, ``v0:{timestamp}:{body}``)."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Link-local (169.254.169.254 and other metadata services), multicast, unspecified addresses."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip in _METADATA


def _guarded_connection(address: tuple[str, int], timeout: float | None = None,
                        source_address: tuple[str, int] | None = None) -> socket.socket:
    """socket.create_connection, refusing the host if any address it resolves to is refused; the
    socket connects to an address checked here, so DNS cannot answer differently in between."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NotifyError(f"The webhook's host name does not resolve ({exc.strerror}).") from None
    if any(address_refused(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos):
        raise NotifyError("The webhook's host resolves to a link-local or metadata address; it is refused.")
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address")


def _body(message: Message) -> bytes:
    payload = {
        "text": message.text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": message.text}}],
        "controlroom": {"notification": message.notification_id, "event": message.kind, **message.facts},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _secret(*, workspace_id: int, secret_ref: str) -> str:
    # Looked up inside the run's workspace only: another workspace's reference of the same name
    # is never found, and secret_resolve checks the workspace again.
    ref = SecretRef.objects.filter(workspace_id=workspace_id, name=secret_ref).first()
    if ref is None:
        raise NotifyError(f"The secret reference '{secret_ref}' does not exist in this workspace.")
    try:
        return secret_resolve(ref, workspace_id=workspace_id)
    except SecretUnavailable as exc:
        raise NotifyError(str(exc)) from None


def send(*, target: str, message: Message, workspace_id: int, secret_ref: str) -> None:
    """POST the signed JSON to ``target``; any answer but 2xx (a redirect too) is a NotifyError."""
    if problem := webhook_url_problem(target):
        raise NotifyError(problem[0].upper() + problem[1:] + ".")
    secret = _secret(workspace_id=workspace_id, secret_ref=secret_ref)
    parts = urlsplit(target)
    body = _body(message)
    timestamp = str(int(time.time()))
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=TIMEOUT_S)
    connection._create_connection = _guarded_connection  # type: ignore[attr-defined]
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    headers = {"Content-Type": "application/json", "User-Agent": "ControlRoom-Notifier/1",
               "X-Timestamp": timestamp, "X-Signature": signature(secret=secret, timestamp=timestamp, body=body),
               "X-Notification-Id": str(message.notification_id)}
    if parts.username or parts.password:
        userinfo = f"{parts.username or ''}:{parts.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo).decode()
    shown = target_display(target)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read(1024)
    except NotifyError:
        raise
    except TimeoutError:
        log.warning("notification %s: webhook %s timed out", message.notification_id, shown)
        raise NotifyError(f"The webhook did not answer within {TIMEOUT_S:g} s.") from None
    except (OSError, http.client.HTTPException) as exc:
        log.warning("notification %s: webhook %s failed", message.notification_id, shown, exc_info=True)
        raise NotifyError(f"The webhook could not be reached ({type(exc).__name__}).") from None
    finally:
        connection.close()
    if 300 <= response.status < 400:
        raise NotifyError(f"The webhook answered HTTP {response.status} (a redirect; redirects are not followed).")
    if not 200 <= response.status < 300:
        log.warning("notification %s: webhook %s answered %s: %r", message.notification_id, shown,
                    response.status, answer[:200])
        raise NotifyError(f"The webhook answered HTTP {response.status}.")


def target_display(target: str) -> str:
    """The URL without credentials, query string or fragment, and only its first path segment:
    a Slack-style URL carries its token in the path (/services/T…/B…/secret), and the run page
    is open to every member."""
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(invalid URL)"
    segments = parts.path.lstrip("/").split("/")
    path = "/" + segments[0] + ("/…" if len(segments) > 1 else "")
    return urlunsplit((parts.scheme, netloc, path if parts.path else "", "", ""))
