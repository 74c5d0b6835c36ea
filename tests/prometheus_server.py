"""A real Prometheus for the tests: Debian's ``prometheus`` package (scripts/system_deps.sh),
started on a free loopback port with a scrape job for the test server's ``/metrics`` (every
second, with its bearer token), its data in a temporary folder, stopped afterwards.

``PrometheusServer.query`` asks its HTTP query API (``/api/v1/query``)."""

from __future__ import annotations

import shutil
import time
from typing import Any

import requests
import yaml

from tests.servers import HOST, _Server


class PrometheusServer(_Server):
    name = "prometheus"
    start_timeout = 60.0

    def __init__(self, *, target: str, token: str) -> None:
        super().__init__()
        self.target, self.token = target, token

    def _start(self) -> str:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: apt-get install prometheus (scripts/system_deps.sh)")
        assert self.tmpdir is not None
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "controlroom", "metrics_path": "/metrics",
                                      "authorization": {"type": "Bearer", "credentials": self.token},
                                      "static_configs": [{"targets": [self.target]}]}]}
        (self.tmpdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._spawn([binary, f"--config.file={self.tmpdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={self.tmpdir / 'data'}", f"--web.listen-address={HOST}:{self.port}",
                     "--log.level=warn"])
        self._wait_ready()
        return f"http://{HOST}:{self.port}"

    def _ready(self) -> bool:
        try:
            return requests.get(f"http://{HOST}:{self.port}/-/ready", timeout=1).ok
        except requests.RequestException:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (raises on a query Prometheus refuses)."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        if answer.get("status") != "success":
            raise AssertionError(f"Prometheus refused {promql!r}: {answer.get('error')}")
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of a query (None when it has no sample)."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> float:
        """Poll until the query's value is ``expected`` (scrapes arrive every second)."""
        deadline, got = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            got = self.value(promql)
            if got == expected:
                return got
            time.sleep(0.5)
        raise AssertionError(f"{promql} is {got}, not {expected}, after {timeout:.0f} s")

    def target_health(self) -> list[dict[str, Any]]:
        """Prometheus's view of its scrape targets (health, last error)."""
        return requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
