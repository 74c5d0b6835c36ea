"""Reruns: retry from failed (succeeded phases are kept, not run again), repair (chosen phases
and everything downstream of them run again, the rest is kept) and rebuild (all again, same
version, inputs and git sha, then the output hashes are compared)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from artifacts.models import Artifact
from controlroom.access import Access
from controlroom.models import Role
from controlroom.services import ServiceError
from runs.models import EventType, PhaseState, Run, RunStatus
from runs.services.events import event_append
from runs.services.runs import _admit_and_dispatch, run_insert

MODES = ("retry", "repair", "rebuild")


def run_rerun(*, access: Access, run: Run, mode: str, phases: list[str] | None = None) -> Run:
    """A new run linked to ``run``: "retry" re-runs only failed, skipped and cancelled phases
    (a failed or cancelled run only); "repair" re-runs the named ``phases`` and every phase
    downstream of them, keeping the others' results; "rebuild" re-runs every phase of an ended run."""
    access.require(Role.OPERATOR)
    if mode not in MODES:
        raise ServiceError("The rerun mode must be retry, repair or rebuild.")
    if not run.is_terminal:
        raise ServiceError(f"Run {run.pk} has not ended yet; cancel it or wait.", code="conflict")
    if mode == "retry" and run.status == RunStatus.SUCCEEDED:
        raise ServiceError(f"Run {run.pk} succeeded; there is nothing to retry (rebuild runs it all again).",
                           code="conflict")
    again = repair_set(run=run, chosen=phases or []) if mode == "repair" else None
    with transaction.atomic():
        new = run_insert(access=access, version=run.job_version, environment=run.environment,
                         parameters=run.parameters, trigger=Run.Trigger.RERUN, input_manifest=run.input_manifest,
                         rerun_of=run, rerun_mode=mode)
        if mode != "rebuild":
            _keep_succeeded(original=run, new=new, again=again)
    _admit_and_dispatch(workspace_id=new.workspace_id)
    new.refresh_from_db()
    return new


def repair_set(*, run: Run, chosen: list[str]) -> set[str]:
    """The phases a repair of ``run`` runs again: the chosen ones and all their downstream.

    Every phase outside the set keeps its outcome, so a phase in the set may only depend on
    outside phases that succeeded; otherwise it could never start, and the error says which to add."""
    phases = {p.name: p for p in run.phases.all()}
    if not chosen:
        raise ServiceError("Choose at least one phase to repair.")
    unknown = sorted(set(chosen) - set(phases))
    if unknown:
        raise ServiceError(f"Run {run.pk} has no phase named {', '.join(repr(n) for n in unknown[:5])}.")
    again = set(chosen)
    grew = True
    while grew:  # downstream closure; a run has at most a few hundred phases
        downstream = {name for name, p in phases.items() if set(p.depends_on) & again}
        grew = not downstream <= again
        again |= downstream
    for name in sorted(again):
        missing = [d for d in phases[name].depends_on
                   if d not in again and phases[d].state != PhaseState.SUCCEEDED]
        if missing:
            raise ServiceError(f"{name} depends on {', '.join(missing)}, which did not succeed in run {run.pk}: "
                               "include it in the repair.")
    return again


def _keep_succeeded(*, original: Run, new: Run, again: set[str] | None = None) -> None:
    """Copy the original's succeeded phases (but those in ``again``) into ``new`` as done."""
    done = {p.name: p for p in original.phases.filter(state=PhaseState.SUCCEEDED) if p.name not in (again or ())}
    phases = list(new.phases.all())
    for phase in phases:
        kept = done.get(phase.name)
        if kept is None:
            continue
        phase.state, phase.attempt = PhaseState.SUCCEEDED, 0
        phase.output = {**kept.output, "kept_from_run": original.pk}
        phase.started_at, phase.finished_at = kept.started_at, kept.finished_at
        phase.save()
        for artifact in Artifact.objects.filter(run=original, phase=kept):  # same blob, now also this run's
            Artifact.objects.create(workspace=new.workspace, run=new, phase=phase, name=artifact.name,
                                    media_type=artifact.media_type, sha256=artifact.sha256, size=artifact.size,
                                    blob_id=artifact.blob_id, location=artifact.location)
        event_append(run=new, phase=phase, type=EventType.PHASE_SUCCEEDED,
                     message=f"{phase.name} kept from run {original.pk} (it succeeded there)",
                     payload={"kept_from_run": original.pk})
    succeeded = set(done)
    for phase in phases:
        if phase.name not in succeeded and phase.blocked and set(phase.depends_on) <= succeeded:
            phase.blocked = False
            phase.save(update_fields=["blocked"])


@dataclass(frozen=True)
class OutputDifference:
    name: str
    original: str | None
    rebuilt: str | None
    kind: str = "artifact"  # or "table": then the hashes are the tables' canonical fingerprints
    # A table the rebuild's phase left as it was (an upsert that found every row in place): no
    # new version, so nothing to compare, and nothing differs either.
    unchanged: bool = False

    @property
    def pending(self) -> bool:
        """A table written on both sides whose fingerprint is still being computed ("" on a side)."""
        sides = (self.original, self.rebuilt)
        return self.kind == "table" and "" in sides and None not in sides and not self.unchanged

    @property
    def same(self) -> bool:
        return self.original == self.rebuilt and not self.pending


def rebuild_comparison(run: Run) -> list[OutputDifference] | None:
    """For an ended rebuild: every output artifact with its hash in both runs (None otherwise)."""
    if run.rerun_mode != "rebuild" or run.rerun_of is None or not run.is_terminal:
        return None
    before = (run.rerun_of.output_manifest or {}).get("artifacts", {})
    after = (run.output_manifest or {}).get("artifacts", {})
    artifacts = [OutputDifference(name, before.get(name), after.get(name)) for name in sorted(set(before) | set(after))]
    tables_before, tables_after = _written_tables(run.rerun_of), _written_tables(run)
    untouched = _unchanged_tables(run)
    return artifacts + [OutputDifference(name, tables_before.get(name), tables_after.get(name), kind="table",
                                         unchanged=name not in tables_after and name in untouched)
                        for name in sorted(set(tables_before) | set(tables_after))]


def _unchanged_tables(run: Run) -> set[str]:
    """Tables a phase of ``run`` targeted but left as they were (its output names the table with
    no version: an upsert that changed nothing commits no snapshot)."""
    names = set()
    for output in run.phases.values_list("output", flat=True):
        for entry in (output or {}).get("tables") or []:
            if isinstance(entry, dict) and entry.get("version") is None and entry.get("table"):
                names.add(f"{entry.get('catalog')}.{entry['table']}")
    return names


def _written_tables(run: Run) -> dict[str, str | None]:
    """Each table the run wrote, by name, with the fingerprint of the last version it wrote that
    changed the content (maintenance commits such as optimize keep it and record none): "" while
    that fingerprint is pending (computed after the commit), None if only maintenance ran."""
    from lakehouse.models import TableEdge

    edges = (TableEdge.objects.filter(run=run, direction=TableEdge.Direction.WRITE)
             .select_related("table_version__table").order_by("table_version__committed_at", "table_version_id"))
    written: dict[str, str | None] = {}
    for edge in edges:
        table = edge.table_version.table
        name = f"{table.catalog_name}.{table.namespace}.{table.name}"
        version = edge.table_version
        written[name] = "" if version.fingerprint_pending else version.fingerprint or written.get(name)
    return written
