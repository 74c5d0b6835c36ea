"""The OpenAPI 3.1 documents of the executor contract (served at /api/v1/ops/openapi.json) and of
the IDE API (at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_TOKEN = {"lease_token": {"type": "string", "minLength": 1}}


def _json(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or []}


def _responses(ok: str, *errors: int, ok_schema: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {ok: {"description": "OK", "content": {"application/json": {"schema": ok_schema or
                                                                                        {"type": "object"}}}}}
    for code in (400, 401, 403, *errors):
        out[str(code)] = {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
    return out


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


PATHS: dict[str, Any] = {
    "/runs": {
        "get": {"operationId": "listRuns", "parameters": [
            {"name": "status", "in": "query", "schema": {"enum": ["queued", "running", "succeeded", "failed",
                                                                   "cancelled"]}},
            {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
            "responses": _responses("200")},
        "post": {"operationId": "createRun", "parameters": [
            {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}}],
            "requestBody": _json(_obj({"job": {"type": "string"}, "spec_slug": {"type": "string"},
                                       "git_sha": {"type": "string"}, "environment": {"enum": ["dev", "stage", "prod"]},
                                       "parameters": {"type": "object"}, "input_manifest": {"type": "object"}})),
            "responses": {**_responses("201", 404, 409, 413, 422),
                          "200": {"description": "the run an earlier request with this Idempotency-Key created"}}},
    },
    "/runs/{run_id}": {"get": {"operationId": "getRun", "parameters": [_id("run_id")],
                               "responses": _responses("200", 404)}},
    "/runs/{run_id}/events": {
        "get": {"operationId": "listEvents", "parameters": [
            _id("run_id"), {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": _responses("200", 404)},
        "post": {"operationId": "appendEvents", "parameters": [_id("run_id")],
                 "requestBody": _json(_obj({"events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _obj(
                     {"event_id": {"type": "string", "format": "uuid"}, "phase_id": {"type": "integer"},
                      "type": {"enum": ["PHASE_LOG", "PHASE_PROGRESS"]}, **_TOKEN,
                      "level": {"enum": ["debug", "info", "warning", "error"]}, "message": {"type": "string"},
                      "payload": {"type": "object"}}, ["event_id", "phase_id", "type", "lease_token"])}},
                     ["events"])),
                 "responses": _responses("200", 404, 409)},
    },
    "/runs/{run_id}/cancel": {"post": {"operationId": "cancelRun", "parameters": [_id("run_id")],
                                       "responses": _responses("200", 404, 409)}},
    "/runs/{run_id}/rerun": {"post": {"operationId": "rerunRun", "parameters": [_id("run_id")],
                                      "requestBody": _json(_obj({"mode": {"enum": ["retry", "repair", "rebuild"]},
                                                                 "phases": {"type": "array", "maxItems": 500,
                                                                            "items": {"type": "string"}}},
                                                                ["mode"])),
                                      "responses": _responses("201", 404, 409)}},
    "/claim": {"post": {
        "operationId": "claimPhase",
        "requestBody": _json(_obj({"executor": {"type": "string", "minLength": 1},
                                   "kinds": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                                   "run": {"type": "integer"}, "wait": {"type": "integer", "minimum": 0,
                                                                          "maximum": 30}}, ["executor", "kinds"])),
        "responses": {**_responses("200"), "204": {"description": "nothing is runnable"}}}},
    "/phases/{phase_id}/heartbeat": {"post": {
        "operationId": "heartbeat", "parameters": [_id("phase_id")],
        "requestBody": _json(_obj(_TOKEN, ["lease_token"])),
        "responses": _responses("200", 404, 409, ok_schema=_obj({"cancel_requested": {"type": "boolean"},
                                                                 "lease_expires_at": {"type": "string"}}))}},
    "/phases/{phase_id}/artifacts": {"post": {
        "operationId": "registerArtifact", "parameters": [
            _id("phase_id"),
            # An upload's lease travels here: it is checked (with Content-Length) before the body is read.
            {"name": "X-Lease-Token", "in": "header", "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _obj({**_TOKEN, "name": {"type": "string"}, "sha256": {"type": "string"},
                                                 "size": {"type": "integer", "minimum": 0},
                                                 "media_type": {"type": "string"}, "location": {"type": "string"}},
                                                ["lease_token", "name", "sha256", "size"])},
            "multipart/form-data": {"schema": _obj({"name": {"type": "string"},
                                                    "sha256": {"type": "string"}, "size": {"type": "integer"},
                                                    "media_type": {"type": "string"},
                                                    "file": {"type": "string", "format": "binary"}},
                                                   ["name", "sha256", "size", "file"])}}},
        "responses": _responses("201", 404, 409, 413)}},
    "/phases/{phase_id}/complete": {"post": {
        "operationId": "completePhase", "parameters": [_id("phase_id")],
        "requestBody": _json(_obj({**_TOKEN, "outcome": {"enum": ["succeeded", "failed", "cancelled"]},
                                   "error": {"type": "string"}, "output": {"type": "object"}},
                                  ["lease_token", "outcome"])),
        "responses": _responses("200", 404, 409)}},
}


# The IDE API (runs/ide_api.py, sqlwarehouse/compute_api.py): a document of its own, served at
# /api/v1/openapi.json (and /v1/openapi.json); its server is /api/v1 (or /v1), not /api/v1/ops.
_ENV = {"enum": ["dev", "stage", "prod"]}
_SQL_BODY = _obj({"sql": {"type": "string", "minLength": 1, "maxLength": 200_000},
                  "connection": {"type": "string"}, "environment": _ENV, "parameters": {"type": "object"},
                  "wait_ms": {"type": "integer", "minimum": 0, "maximum": 10_000},
                  "limit": {"type": "integer", "minimum": 1}}, ["sql"])
_EXECUTION = _obj({"id": {"type": "integer"}, "status": {"enum": ["queued", "running", "succeeded", "failed",
                                                                   "cancelled"]},
                   "error": {"type": "string"}, "status_url": {"type": "string"}, "columns": {"type": "array"},
                   "rows": {"type": "array"}, "row_count": {"type": "integer"},
                   "next_offset": {"type": ["integer", "null"]}}, ["id", "status", "status_url"])
_RUN = _obj({"id": {"type": "integer"}, "status": {"type": "string"}, "status_url": {"type": "string"},
             "console_url": {"type": "string"}}, ["id", "status", "status_url", "console_url"])
_KEY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}}


def _start(operation_id: str, name: str, values: str, summary: str) -> dict[str, Any]:
    return {"post": {
        "operationId": operation_id, "summary": summary, "parameters": [_KEY],
        "requestBody": _json(_obj({name: {"type": "string", "minLength": 1}, "environment": _ENV,
                                   values: {"type": "object"}}, [name])),
        "responses": {**_responses("201", 404, 409, 422, ok_schema=_RUN),
                      "200": {"description": "the run an earlier request with this Idempotency-Key started"}}}}


def _run_status(operation_id: str) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "parameters": [_id("run_id")],
                    "responses": _responses("200", 404, ok_schema=_RUN)}}


IDE_PATHS: dict[str, Any] = {
    "/compute/sql": {"post": {
        "operationId": "computeSql", "summary": "Run SQL as the token (scope compute:sql or sql:write)",
        "requestBody": _json(_SQL_BODY),
        "responses": {**_responses("200", 404, 429, ok_schema=_EXECUTION),
                      "202": {"description": "still running after wait_ms: poll status_url",
                              "content": {"application/json": {"schema": _EXECUTION}}}}}},
    "/compute/sql/{execution_id}": {"get": {
        "operationId": "getComputeSql", "summary": "An execution's state and a page of its rows",
        "parameters": [_id("execution_id"),
                       {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": 1000}}],
        "responses": _responses("200", 404, ok_schema=_EXECUTION)}},
    "/compute/job": _start("computeJob", "job", "parameters", "Start a run of a job (scope compute:job)"),
    "/compute/job/{run_id}": _run_status("getComputeJob"),
    "/pipelines/run": _start("runPipeline", "pipeline", "inputs", "Start a pipeline, i.e. a job, with inputs"),
    "/pipelines/run/{run_id}": _run_status("getPipelineRun"),
}


def ide_document(server_url: str) -> dict[str, Any]:
    """The IDE API's OpenAPI document (served at /api/v1/openapi.json)."""
    return {**document(server_url), "info": {"title": "Control Room IDE API", "version": "1"}, "paths": IDE_PATHS}


def document(server_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Control Room executor contract", "version": "1"},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}},
                                                     ["code", "message"])}, ["error"])},
        },
    }
