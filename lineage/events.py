"""OpenLineage (spec 2-0-2) documents for the run events that change a run's or phase's state.

A run is an OpenLineage run of the job ``<job slug>`` and each phase attempt one of the job
``<job slug>.<phase>`` whose parent is the run; both in the namespace
``<OPENLINEAGE_NAMESPACE>/<workspace>/<environment>``. Run ids are UUIDs derived from our ids, so
a document sent twice names the same run.

| run event | OpenLineage |
|---|---|
| PHASE_CLAIMED | START of the phase attempt (and START of the run, at its first claim) |
| PHASE_SUCCEEDED | COMPLETE of the attempt |
| PHASE_FAILED, PHASE_RETRY_SCHEDULED | FAIL of the attempt (a retry is a new attempt, a new run id) |
| PHASE_CANCELLED | ABORT of the attempt |
| RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED | COMPLETE, FAIL, ABORT of the run |

Datasets are the registry's table versions a phase (or, for the run, any phase) read and wrote
(``TableEdge``; with schema, version and row counts) and its artifacts (outputs); only those
recorded by the time of the event. Facets: job type, SQL text (a phase whose config has ``sql``),
source code location (the job version's repository and git sha), the parent run, the error
message of a failure, and ``controlroom`` (workspace, environment, run, phase, kind, attempt,
git sha).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings

from runs.models import EventType, Phase, Run, RunEvent

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACETS = "https://openlineage.io/spec/facets"
log = logging.getLogger(__name__)
PRODUCER = "urn:controlroom:0.1.0"
CONTROLROOM_FACET = "urn:controlroom:facets:1-0-0:ControlRoomRunFacet"
PHASE_EVENTS = {EventType.PHASE_CLAIMED: "START", EventType.PHASE_SUCCEEDED: "COMPLETE",
                EventType.PHASE_FAILED: "FAIL", EventType.PHASE_RETRY_SCHEDULED: "FAIL",
                EventType.PHASE_CANCELLED: "ABORT"}
RUN_EVENTS = {EventType.RUN_SUCCEEDED: "COMPLETE", EventType.RUN_FAILED: "FAIL", EventType.RUN_CANCELLED: "ABORT"}
LIFECYCLE = (*PHASE_EVENTS, *RUN_EVENTS)
_UUID_SPACE = uuid.UUID("8b5c7d52-1f0e-4d3a-9a57-0c6f3c1f7e21")


def _facet(path: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{FACETS}/{path}/{name}.json#/$defs/{name}", **fields}


def namespace(run: Run) -> str:
    """The OpenLineage namespace of a run's jobs and datasets."""
    return f"{settings.OPENLINEAGE_NAMESPACE}/{run.workspace.slug}/{run.environment.name}"


def run_uuid(run: Run) -> str:
    return str(uuid.uuid5(_UUID_SPACE, f"{settings.OPENLINEAGE_NAMESPACE}:run:{run.pk}"))


def attempt_uuid(phase: Phase, attempt: int) -> str:
    return str(uuid.uuid5(_UUID_SPACE, f"{settings.OPENLINEAGE_NAMESPACE}:phase:{phase.pk}:attempt:{attempt}"))


def _datasets(run: Run, phase: Phase | None, until: datetime) -> tuple[list[dict], list[dict]]:
    from artifacts.models import Artifact
    from lakehouse.models import TableEdge

    edges = TableEdge.objects.filter(run=run, created_at__lte=until).select_related("table_version__table")
    if phase is not None:
        edges = edges.filter(phase=phase)
    inputs: dict[tuple[str, str], dict] = {}
    outputs: dict[tuple[str, str], dict] = {}
    for edge in edges.order_by("pk"):
        version, table = edge.table_version, edge.table_version.table
        ns = f"{settings.OPENLINEAGE_NAMESPACE}/{run.workspace.slug}/{table.environment.name}/{table.catalog_name}"
        facets: dict[str, Any] = {"version": _facet("1-0-1", "DatasetVersionDatasetFacet",
                                                    datasetVersion=str(version.version))}
        fields = [{"name": str(c.get("name")), "type": str(c.get("type", ""))} for c in version.schema or []
                  if isinstance(c, dict) and c.get("name")]
        if fields:
            facets["schema"] = _facet("1-2-0", "SchemaDatasetFacet", fields=fields)
        dataset = {"namespace": ns, "name": f"{table.namespace}.{table.name}", "facets": facets}
        if edge.direction == TableEdge.Direction.WRITE:
            dataset["outputFacets"] = {"outputStatistics": _facet(
                "1-0-2", "OutputStatisticsOutputDatasetFacet", rowCount=version.row_count, size=version.bytes)}
            outputs[(ns, dataset["name"])] = dataset
        else:
            inputs[(ns, dataset["name"])] = dataset
    for scoped in ([phase] if phase is not None else run.phases.all()):
        for dataset in _external_inputs(run, scoped):
            inputs.setdefault((dataset["namespace"], dataset["name"]), dataset)
    artifacts = Artifact.objects.filter(run=run, created_at__lte=until)
    if phase is not None:
        artifacts = artifacts.filter(phase=phase)
    for artifact in artifacts.order_by("pk"):
        ns = f"{settings.OPENLINEAGE_NAMESPACE}/{run.workspace.slug}/artifacts"
        name = f"runs/{run.pk}/{artifact.name}"
        outputs[(ns, name)] = {"namespace": ns, "name": name, "facets": {
            "version": _facet("1-0-1", "DatasetVersionDatasetFacet", datasetVersion=artifact.sha256)},
            "outputFacets": {"outputStatistics": _facet("1-0-2", "OutputStatisticsOutputDatasetFacet",
                                                        size=artifact.size)}}
    return list(inputs.values()), list(outputs.values())


def _external_inputs(run: Run, phase: Phase) -> list[dict[str, Any]]:
    """Datasets outside the lakehouse a phase reads (an ingest phase's source tables), named as
    OpenLineage's naming conventions say; a kind opts in with ``lineage_inputs(run, phase)``."""
    from runs.executors import executor_for

    wanted = getattr(executor_for(phase.kind), "lineage_inputs", None)
    if wanted is None:
        return []
    try:
        return [{"namespace": ns, "name": name, "facets": {}} for ns, name in wanted(run, phase)]
    except Exception:  # a connection renamed since: the event goes out without that input
        log.warning("lineage inputs of phase %s could not be named", phase.pk, exc_info=True)
        return []


def _job_facets(run: Run, phase: Phase | None) -> dict[str, Any]:
    version = run.job_version
    facets: dict[str, Any] = {"jobType": _facet("2-0-4", "JobTypeJobFacet", processingType="BATCH",
                                                integration="CONTROLROOM", jobType="TASK" if phase else "JOB")}
    if version.git_repo and version.git_sha:
        facets["sourceCodeLocation"] = _facet("1-1-0", "SourceCodeLocationJobFacet", type="git",
                                              url=version.git_repo, repoUrl=version.git_repo, version=version.git_sha)
    sql = phase.config.get("sql") if phase is not None and isinstance(phase.config, dict) else None
    if isinstance(sql, str) and sql.strip():
        facets["sql"] = _facet("1-1-0", "SQLJobFacet", query=sql,
                               dialect={"sql": "duckdb", "trino": "trino"}.get(phase.kind, phase.kind))
    return facets


def _document(event: RunEvent, event_type: str, run: Run, phase: Phase | None, attempt: int) -> dict[str, Any]:
    ns = namespace(run)
    job_name = run.job.slug if phase is None else f"{run.job.slug}.{phase.name}"
    run_facets: dict[str, Any] = {"controlroom": {
        "_producer": PRODUCER, "_schemaURL": CONTROLROOM_FACET, "workspace": run.workspace.slug,
        "environment": run.environment.name, "runId": run.pk, "gitSha": run.git_sha or run.job_version.git_sha,
        **({"phase": phase.name, "phaseKind": phase.kind, "attempt": attempt} if phase is not None else {})}}
    if phase is not None:
        run_facets["parent"] = _facet("1-2-0", "ParentRunFacet", run={"runId": run_uuid(run)},
                                      job={"namespace": ns, "name": run.job.slug})
    if event_type == "FAIL":
        message = (phase.error if phase is not None else run.error) or event.message
        run_facets["errorMessage"] = _facet("1-0-1", "ErrorMessageRunFacet", message=message[:4000],
                                            programmingLanguage="python")
    inputs, outputs = _datasets(run, phase, event.ts)
    return {
        "eventType": event_type, "eventTime": event.ts.isoformat(), "producer": PRODUCER, "schemaURL": SPEC,
        "run": {"runId": run_uuid(run) if phase is None else attempt_uuid(phase, attempt), "facets": run_facets},
        "job": {"namespace": ns, "name": job_name, "facets": _job_facets(run, phase)},
        "inputs": inputs, "outputs": outputs,
    }


def documents_for(event: RunEvent) -> list[dict[str, Any]]:
    """The OpenLineage documents a lifecycle run event stands for (none for other events)."""
    run = event.run
    if event.type in RUN_EVENTS:
        return [_document(event, RUN_EVENTS[event.type], run, None, 0)]
    if event.type not in PHASE_EVENTS or event.phase is None:
        return []
    phase = event.phase
    attempt = event.payload.get("attempt") if isinstance(event.payload, dict) else None
    attempt = attempt if isinstance(attempt, int) and attempt > 0 else phase.attempt
    if attempt <= 0:
        return []  # cancelled before it was ever claimed: no attempt ran, the run's ABORT says it
    documents = []
    if event.type == EventType.PHASE_CLAIMED and not RunEvent.objects.filter(
            run=run, type=EventType.PHASE_CLAIMED, seq__lt=event.seq).exists():
        documents.append(_document(event, "START", run, None, 0))  # the run starts with its first claim
    documents.append(_document(event, PHASE_EVENTS[event.type], run, phase, attempt))
    return documents
