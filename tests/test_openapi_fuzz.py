"""schemathesis against the served OpenAPI document: no generated input makes a 5xx.

Its strategies are driven with Hypothesis directly (its pytest plugin does not run on pytest 9)."""

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from runs.openapi import PATHS
from runs.services.jobs import job_create
from runs.services.runs import run_create
from tests.test_contract import DIAMOND

pytestmark = pytest.mark.slow
EXAMPLES = 40


def test_no_generated_input_makes_a_5xx(world, django_capture_on_commit_callbacks):
    job = job_create(access=world.access("operator"), spec_text=DIAMOND)
    with django_capture_on_commit_callbacks(execute=False):
        run_create(access=world.access("operator"), job=job)  # so run and phase ids 1.. exist
    headers = {"Authorization": f"Bearer {world.token('operator')}"}
    calls, failures = fuzz_document("/api/v1/ops/openapi.json", headers, django_capture_on_commit_callbacks,
                                    operations=sum(len(ops) for ops in PATHS.values()))
    assert calls >= len(PATHS) * 5
    assert not failures, "\n".join(failures[:10])


def fuzz_document(url: str, headers: dict[str, str], capture, *, operations: int) -> tuple[int, list[str]]:
    """Every operation of the OpenAPI document at ``url`` fuzzed with schemathesis through the WSGI
    app, in the test's transaction: (calls made, one line per 5xx or schema violation).
    schemathesis and Hypothesis are imported here, not with the module: they take a second to
    import, which every quick run would pay for tests it does not run."""
    import schemathesis

    from controlroom.wsgi import application
    failures: list[str] = []
    calls = {"n": 0}
    # Like Django's test client: the test's transaction must survive each request's end.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi(url, application)
        found = [result.ok() for result in schema.get_all_operations()]
        assert len(found) == operations
        for operation in found:
            _fuzz(operation, headers, failures, calls, capture)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return calls["n"], failures


def _fuzz(operation, headers, failures, calls, django_capture_on_commit_callbacks) -> None:
    from hypothesis import HealthCheck, given, settings

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        with django_capture_on_commit_callbacks(execute=False):
            response = case.call(headers=headers)
        calls["n"] += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: "
                            f"{case.body!r} {response.text[:300]}")

    check()
