"""Why a network call failed, in words a user can act on (host, port and the root cause)."""

from __future__ import annotations

import socket
import ssl


def network_cause(exc: BaseException) -> str:
    """The root cause of a failed connection, from the innermost exception of its chain:
    "connection refused", "the host name does not resolve", "no answer in time", a TLS
    failure... (HTTP clients wrap it three or four levels deep)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
        if not isinstance(current, BaseException):
            current = None
    for error in reversed(chain):
        if isinstance(error, ConnectionRefusedError):
            return "connection refused (nothing listens on that port: is the server running, is the port right?)"
        if isinstance(error, socket.gaierror):
            return "the host name does not resolve (is it spelled right, is it reachable from this server?)"
        if isinstance(error, socket.timeout | TimeoutError) or "timed out" in str(error).lower():
            return "no answer in time (a firewall, or the server is overloaded)"
        if isinstance(error, ssl.SSLError):
            return f"the TLS handshake failed ({error.reason or error})"
        if isinstance(error, ConnectionResetError):
            return "the connection was reset by the server"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
    innermost = chain[-1]
    return f"{type(innermost).__name__}: {str(innermost)[:200]}"
