"""Secret masking: a secret value never stored where people read (GitHub Actions' rule).

Which values: every value of a workspace's secret references (environment, file, Vault), read
again at most every MASK_REFRESH_S seconds, plus every value ``secret_resolve`` handed out in
this process (at once, so a rotated value is masked from its first use). Each is matched
verbatim and in its common encodings: base64 (standard and URL-safe, with and without
padding), URL-encoded (``%20`` and ``+``) and JSON-escaped. Values shorter than
MIN_SECRET_CHARS are not masked (masking ``a`` would hide every word); the log says which.

Where: the shared writers call it, so every feature that uses them inherits it: run events
(PHASE_LOG lines, messages and payloads, ``runs.services.events``), a phase's error and output
(``runs.services.phases``), a SQL execution's error, audit before/after
(``controlroom.audit``), artifact previews (``artifacts.previews``) and every server log line
(``controlroom.logging_json``: the values this process resolved).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_CHARS = 4
MASK_REFRESH_S = 30.0
log = logging.getLogger(__name__)
_lock = threading.Lock()
_resolved: dict[int, set[str]] = {}  # workspace id -> values secret_resolve returned in this process
_refreshed: dict[int, tuple[float, frozenset[str]]] = {}  # workspace id -> (when, its references' values)
_patterns: dict[frozenset[str], list[str]] = {}


def secret_seen(workspace_id: int, value: str) -> None:
    """Remember a value ``secret_resolve`` handed out: masked from now on in this process."""
    if len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        _resolved.setdefault(workspace_id, set()).add(value)


def masking_forget() -> None:
    """Drop what this process remembers (tests)."""
    with _lock:
        _resolved.clear()
        _refreshed.clear()
        _patterns.clear()


def mask_text(workspace_id: int | None, text: str) -> str:
    """``text`` with each secret of the workspace (None: every value this process resolved) as ***."""
    if not text:
        return text
    for pattern in _patterns_for(workspace_id):
        if pattern in text:
            text = text.replace(pattern, MASK)
    return text


def mask_value(workspace_id: int | None, value: Any) -> Any:
    """Every string inside ``value`` (a JSON-like structure: keys too) masked."""
    patterns = _patterns_for(workspace_id)
    if not patterns:
        return value
    return _walk(value, lambda s: mask_text(workspace_id, s))


def _walk(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {(_walk(k, fn) if isinstance(k, str) else k): _walk(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, fn) for v in value]
    return value


def variants(value: str) -> set[str]:
    """The forms a value is masked in: itself and its common encodings (none for a value
    shorter than MIN_SECRET_CHARS)."""
    if len(value) < MIN_SECRET_CHARS:
        return set()
    raw = value.encode()
    found = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        found |= {encoded, encoded.rstrip("=")}
    return {v for v in found if len(v) >= MIN_SECRET_CHARS}


def _patterns_for(workspace_id: int | None) -> list[str]:
    if workspace_id is None:
        with _lock:
            values = frozenset().union(*_resolved.values()) if _resolved else frozenset()
    else:
        values = _workspace_values(workspace_id)
    if not values:
        return []
    with _lock:
        patterns = _patterns.get(values)
    if patterns is None:
        # The longest first: a value that contains another is masked whole.
        patterns = sorted(set().union(*(variants(v) for v in values)), key=len, reverse=True)
        with _lock:
            if len(_patterns) > 256:
                _patterns.clear()
            _patterns[values] = patterns
    return patterns


def _workspace_values(workspace_id: int) -> frozenset[str]:
    now = time.monotonic()
    with _lock:
        cached = _refreshed.get(workspace_id)
        seen = frozenset(_resolved.get(workspace_id, ()))
    if cached is None or now - cached[0] > MASK_REFRESH_S:
        cached = (now, _references_values(workspace_id))
        with _lock:
            _refreshed[workspace_id] = cached
    return cached[1] | seen


def _references_values(workspace_id: int) -> frozenset[str]:
    """The current values of the workspace's references that can be read (quietly: the ones
    that cannot are reported where they are used)."""
    from connections.models import SecretRef
    from connections.services import secret_value

    values = set()
    for ref in SecretRef.objects.filter(workspace_id=workspace_id).select_related("workspace"):
        value = secret_value(ref)
        if value is None:
            continue
        if len(value) < MIN_SECRET_CHARS:
            log.warning("secret %s is shorter than %d characters: it is not masked", ref.name, MIN_SECRET_CHARS,
                        extra={"workspace_id": workspace_id})
            continue
        values.add(value)
    return frozenset(values)
