"""The connection to Control Room: an Airflow Connection (host = Control Room's URL, password = an
API token with the runs:read and runs:write scopes) and a small client of its jobs/runs REST API
(and of ``POST /api/v1/ops/runs/<id>/cancel``, where the token alone names the workspace)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowException

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
IDEMPOTENCY_KEY_MAX = 200  # Control Room's Run.idempotency_key max_length
CANCEL_TIMEOUT = 10.0  # seconds: a cancel runs while Airflow kills the task, which does not wait long


class ControlRoomError(AirflowException):
    """Control Room refused a request or could not be reached.

    ``transient`` is true for what a later attempt may get past: a network error, 429, 5xx."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status, self.transient = status, transient


def _error(exc: httpx.HTTPError | None, response: httpx.Response | None, what: str) -> ControlRoomError:
    if response is None:
        return ControlRoomError(f"Control Room could not be reached to {what}: {exc}", transient=True)
    try:
        detail = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:300]
    status = response.status_code
    return ControlRoomError(f"Control Room answered {status} to {what}: {detail}", status=status,
                            transient=status == 429 or status >= 500)


def idempotency_key(*parts: object) -> str:
    """An Idempotency-Key naming the Airflow task try (hashed when longer than Control Room keeps)."""
    key = "airflow:" + "/".join(str(p) for p in parts)
    if len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        key = "airflow:" + hashlib.sha256(key.encode()).hexdigest()
    return key


@dataclass(frozen=True)
class ControlRoomClient:
    """Calls /api/v1/workspaces/<workspace>/… with ``Authorization: Bearer <token>``."""

    base_url: str
    token: str
    timeout: float = 30.0

    def _url(self, workspace: str, path: str) -> str:
        return f"{self.base_url}/api/v1/workspaces/{quote(workspace, safe='')}/{path}"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def run_url(self, workspace: str, run_id: int) -> str:
        """The run's page in Control Room's console."""
        return f"{self.base_url}/w/{quote(workspace, safe='')}/runs/{int(run_id)}/"

    def trigger_run(self, *, workspace: str, job: str, environment: str, parameters: dict[str, Any],
                    key: str | None = None) -> dict[str, Any]:
        """POST jobs/<job>/runs: a new run (or, for a repeated ``key``, the run it created)."""
        headers = {**self._headers, **({"Idempotency-Key": key} if key else {})}
        what = f"trigger a run of {workspace}/{job}"
        response = None
        try:
            response = httpx.post(self._url(workspace, f"jobs/{quote(job, safe='')}/runs"), headers=headers,
                                  json={"environment": environment, "parameters": parameters}, timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise _error(exc, response, what) from exc
        return response.json()

    def get_run(self, *, workspace: str, run_id: int) -> dict[str, Any]:
        """GET runs/<id>: the run with its status, error and phases."""
        response = None
        try:
            response = httpx.get(self._url(workspace, f"runs/{int(run_id)}"), headers=self._headers,
                                 timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise _error(exc, response, f"read run {run_id}") from exc
        return response.json()

    def _cancel_url(self, run_id: int) -> str:
        return f"{self.base_url}/api/v1/ops/runs/{int(run_id)}/cancel"

    @staticmethod
    def _cancelled(run_id: int, response: httpx.Response | None, exc: httpx.HTTPError) -> None:
        """A 409 (the run has already ended) is an answer, not an error; anything else raises."""
        if response is not None and response.status_code == 409:
            return None
        raise _error(exc, response, f"cancel run {run_id}") from exc

    def cancel_run(self, *, run_id: int) -> dict[str, Any] | None:
        """POST /api/v1/ops/runs/<id>/cancel (the token names the workspace; needs runs:write): the
        run, cancelling (pending phases end now, running ones at their next heartbeat), or already
        cancelling. None when the run had already ended (Control Room answers 409): nothing to do."""
        response = None
        try:
            response = httpx.post(self._cancel_url(run_id), headers=self._headers,
                                  timeout=min(self.timeout, CANCEL_TIMEOUT))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return self._cancelled(run_id, response, exc)
        return response.json()

    async def acancel_run(self, *, run_id: int) -> dict[str, Any] | None:
        """:meth:`cancel_run` without blocking the event loop (for the trigger's ``on_kill``)."""
        response = None
        try:
            async with httpx.AsyncClient(timeout=min(self.timeout, CANCEL_TIMEOUT)) as client:
                response = await client.post(self._cancel_url(run_id), headers=self._headers)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            return self._cancelled(run_id, response, exc)
        return response.json()

    async def aget_run(self, *, workspace: str, run_id: int) -> dict[str, Any]:
        """GET runs/<id> without blocking the event loop (for the trigger)."""
        response = None
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self._url(workspace, f"runs/{int(run_id)}"), headers=self._headers)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise _error(exc, response, f"read run {run_id}") from exc
        return response.json()


def base_url_of(conn: Connection) -> str:
    """Control Room's URL from a connection: ``host`` as a full URL (``https://cr.example.com``), or
    a bare host name with ``schema`` as the scheme (default https) and ``port``."""
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise AirflowException(f"Connection {conn.conn_id!r} has no host: set it to Control Room's URL.")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    parts = urlsplit(host)
    if conn.port and parts.port is None:
        host = parts._replace(netloc=f"{parts.netloc}:{conn.port}").geturl()
    return host


class ControlRoomHook(BaseHook):
    """Reads the Control Room connection and hands out a :class:`ControlRoomClient`."""

    conn_name_attr = "controlroom_conn_id"
    default_conn_name = "controlroom_default"
    conn_type = "controlroom"
    hook_name = "Control Room"

    def __init__(self, controlroom_conn_id: str = default_conn_name, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.controlroom_conn_id, self.timeout = controlroom_conn_id, timeout

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: Control Room's URL and an API token, nothing else."""
        return {"hidden_fields": ["login", "schema", "port", "extra"],
                "relabeling": {"host": "Control Room URL", "password": "API token"},
                "placeholders": {"host": "https://controlroom.example.com", "password": "crt_…"}}

    def _client(self, conn: Connection) -> ControlRoomClient:
        if not conn.password:
            raise AirflowException(f"Connection {conn.conn_id!r} has no API token: put it in the password field.")
        return ControlRoomClient(base_url=base_url_of(conn), token=conn.password, timeout=self.timeout)

    def get_conn(self) -> ControlRoomClient:
        """A client for the connection (from a task)."""
        return self._client(self.get_connection(self.controlroom_conn_id))

    async def aget_conn(self) -> ControlRoomClient:
        """A client for the connection, looked up without blocking the event loop (from a trigger)."""
        return self._client(await self.aget_connection(self.controlroom_conn_id))

    def cancel_run(self, run_id: int) -> dict[str, Any] | None:
        """Cancel a run (see :meth:`ControlRoomClient.cancel_run`): None when it had already ended."""
        return self.get_conn().cancel_run(run_id=run_id)
