"""A small client of Apache Superset's REST API: the calls publishing makes, nothing more.

Superset's API wants a signed-in session: ``POST /api/v1/security/login`` gives a bearer token,
``GET /api/v1/security/csrf_token/`` a CSRF token bound to the session cookie, and every write then
carries ``Authorization: Bearer``, ``X-CSRFToken`` and a ``Referer`` of Superset's own address.
List endpoints take their filters as Rison in ``q`` (``rison``). Redirects are never followed, so
the token goes nowhere but the configured address. Every failure is a ``SupersetError`` whose text
is one sentence for the page."""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from controlroom.network import network_cause

log = logging.getLogger(__name__)
TIMEOUT_S = 20.0  # creating a database makes Superset connect to Trino before it answers


class SupersetError(RuntimeError):
    """Superset could not be reached or refused; ``str()`` is the sentence for the page."""


class SupersetMissing(SupersetError):
    """The object asked for is not (or no longer) in Superset."""


def rison(value: Any) -> str:
    """``value`` in Rison, the notation of Superset's ``q`` parameter (strings always quoted)."""
    if value is True:
        return "!t"
    if value is False:
        return "!f"
    if value is None:
        return "!n"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, (list, tuple)):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    if isinstance(value, dict):
        return "(" + ",".join(f"{rison(str(k))}:{rison(v)}" for k, v in value.items()) + ")"
    raise TypeError(f"not expressible in Rison: {type(value).__name__}")


def _message(response: requests.Response) -> str:
    """What Superset said about a refusal, flattened to one line."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    said = body.get("message") if isinstance(body, dict) else None
    if said is None and isinstance(body, dict):
        said = body.get("errors") or body.get("msg")
    if isinstance(said, dict):
        said = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in said.items())
    elif isinstance(said, list):
        said = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in said)
    text = " ".join(str(said or f"HTTP {response.status_code}").split())
    return text[:300].rstrip(". ")


class SupersetClient:
    """One signed-in session with a Superset server (``login`` first)."""

    def __init__(self, url: str, username: str, password: str, *, verify: bool | str = True,
                 secrets: tuple[str, ...] = ()) -> None:
        self.url, self.username, self._password = url.rstrip("/"), username, password
        self._session = requests.Session()
        self._session.verify, self._session.trust_env = verify, False
        # Values that must never reach a message (Superset may echo what it was sent).
        self._secrets = tuple(s for s in (password, *secrets) if s)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _send(self, method: str, path: str, *, what: str, **kw: Any) -> requests.Response:
        try:
            return self._session.request(method, f"{self.url}{path}", timeout=TIMEOUT_S, allow_redirects=False,
                                         **kw)
        except requests.RequestException as exc:
            raise SupersetError(f"Superset at {self.url} could not be reached to {what}: "
                                f"{self._clean(network_cause(exc))}.") from None

    def login(self) -> None:
        """Sign in (database provider) and take a CSRF token for the writes."""
        response = self._send("POST", "/api/v1/security/login", what="sign in", json={
            "username": self.username, "password": self._password, "provider": "db", "refresh": False})
        if response.status_code in (400, 401, 403):
            raise SupersetError(f"Superset at {self.url} refused the sign-in of '{self.username}': "
                                f"{self._clean(_message(response))}.")
        token = response.json().get("access_token") if response.ok and self._is_json(response) else None
        if not token:
            raise SupersetError(f"Superset at {self.url} did not sign '{self.username}' in "
                                f"(HTTP {response.status_code}); is this Superset's address?")
        self._session.headers.update({"Authorization": f"Bearer {token}", "Referer": f"{self.url}/"})
        csrf = self.call("GET", "/api/v1/security/csrf_token/", what="take a CSRF token")
        self._session.headers["X-CSRFToken"] = str(csrf.get("result") or "")

    @staticmethod
    def _is_json(response: requests.Response) -> bool:
        return response.headers.get("Content-Type", "").startswith("application/json")

    def call(self, method: str, path: str, *, what: str, json_body: Any = None,
             params: dict[str, str] | None = None) -> dict[str, Any]:
        """One API call; the JSON answer, or a ``SupersetError`` naming ``what`` was being done."""
        response = self._send(method, path, what=what, json=json_body, params=params)
        if response.status_code == 404:
            raise SupersetMissing(f"Superset has no such object ({path}).")
        if not response.ok:
            log.warning("superset %s %s answered %s: %s", method, path, response.status_code,
                        self._clean(response.text[:2000]))
            raise SupersetError(f"Superset refused to {what}: {self._clean(_message(response))}.")
        if not self._is_json(response):
            raise SupersetError(f"Superset answered something other than JSON to {path} "
                                f"(HTTP {response.status_code}); is this Superset's address?")
        return response.json() if response.content else {}

    def find(self, resource: str, filters: list[tuple[str, str, Any]], *, what: str) -> list[dict[str, Any]]:
        """The ``resource`` rows (database, dataset, chart) matching every (column, operator, value)."""
        query = {"filters": [{"col": c, "opr": o, "value": v} for c, o, v in filters], "page_size": 100}
        return self.call("GET", f"/api/v1/{resource}/", what=what, params={"q": rison(query)}).get("result", [])

    def get(self, resource: str, pk: int, *, what: str) -> dict[str, Any]:
        """One ``resource`` row by id (``SupersetMissing`` when it was deleted in Superset)."""
        return self.call("GET", f"/api/v1/{resource}/{pk}", what=what).get("result", {})
