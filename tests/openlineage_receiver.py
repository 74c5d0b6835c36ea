"""An OpenLineage receiver for the tests, as its own process on a free loopback port.

Marquez (the reference receiver) does not install here, so this stands in for it: it takes
``POST /api/v1/lineage`` (JSON, as Marquez does), checks the bearer key when one is set, keeps
every document in order, and answers with the status the test chose (``POST /control/status``,
e.g. 503 to play an endpoint that is down). ``GET /control/events`` returns what it kept.

``python -m tests.openlineage_receiver PORT [API_KEY]`` runs it; ``ReceiverServer`` starts it
(tests/servers.py's lifecycle)."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.servers import HOST, _Server

_state: dict[str, Any] = {"status": 201, "events": [], "refused": 0, "key": ""}
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: Any = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/control/status":
            with _lock:
                _state["status"] = int(json.loads(body)["status"])
            return self._answer(200)
        if self.path != "/api/v1/lineage":
            return self._answer(404)
        if _state["key"] and self.headers.get("Authorization") != f"Bearer {_state['key']}":
            return self._answer(401, {"error": "unauthorized"})
        with _lock:
            status = _state["status"]
            if status < 300:
                _state["events"].append(json.loads(body))
            else:
                _state["refused"] += 1
        return self._answer(status)

    def do_GET(self) -> None:
        if self.path == "/control/events":
            with _lock:
                return self._answer(200, {"events": _state["events"], "refused": _state["refused"]})
        return self._answer(404)

    def log_message(self, *args: Any) -> None:
        pass


class ReceiverServer(_Server):
    name = "openlineage-receiver"

    def __init__(self, api_key: str = "") -> None:
        super().__init__()
        self.api_key = api_key

    def _start(self) -> str:
        self._spawn([sys.executable, "-m", "tests.openlineage_receiver", str(self.port), self.api_key],
                    cwd=Path(__file__).resolve().parent.parent)
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/control/events", timeout=1).ok
        except requests.RequestException:
            return False

    def set_status(self, status: int) -> None:
        requests.post(f"{self.url}/control/status", json={"status": status}, timeout=5).raise_for_status()

    def events(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/control/events", timeout=5).json()["events"]

    def refused(self) -> int:
        return requests.get(f"{self.url}/control/events", timeout=5).json()["refused"]


if __name__ == "__main__":
    _state["key"] = sys.argv[2] if len(sys.argv) > 2 else ""
    ThreadingHTTPServer((HOST, int(sys.argv[1])), _Handler).serve_forever()
