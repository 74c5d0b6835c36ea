"""Bounded previews: the first rows or lines of an artifact, never the whole object."""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from artifacts.models import Artifact
from artifacts.storage import get_store
from controlroom.masking import mask_text, mask_value

MAX_ROWS = 50
MAX_BYTES = 64 * 1024


@dataclass
class Preview:
    kind: str  # "table", "text" or "none"
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    text: str = ""
    truncated: bool = False
    note: str = ""


def _head_text(artifact: Artifact) -> tuple[str, bool]:
    raw = get_store().read_range(artifact.sha256, 0, MAX_BYTES + 1)  # one bounded ranged read
    truncated = len(raw) > MAX_BYTES
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw[:MAX_BYTES], final=not truncated)
    return text, truncated


def _csv(artifact: Artifact) -> Preview:
    text, truncated = _head_text(artifact)
    lines = text.splitlines()
    if truncated and lines:
        lines = lines[:-1]  # the last line may be cut mid-row
    reader = csv.reader(io.StringIO("\n".join(lines[: MAX_ROWS + 1])))
    rows = list(reader)
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return Preview(kind="table", columns=header, rows=body, truncated=truncated or len(lines) > MAX_ROWS + 1)


def _parquet(artifact: Artifact) -> Preview:
    """The footer (row count, columns) and the first rows, read by range: in practice the first row
    group's column chunks and the footer, never the whole object."""
    try:
        with get_store().open_random(artifact.sha256, size=artifact.size) as fh:
            parquet = pq.ParquetFile(fh, pre_buffer=False)
            total = parquet.metadata.num_rows
            batches = parquet.iter_batches(batch_size=MAX_ROWS + 1, use_threads=False)
            first = next(batches, None)
            columns = parquet.schema_arrow.names
            # by position, not by name: a result may repeat a column name
            rows = [list(row) for row in zip(*(c.to_pylist() for c in first.columns), strict=True)] if first else []
    except (pa.ArrowException, OSError) as exc:
        return Preview(kind="none", note=f"This Parquet file cannot be read: {exc}")
    return Preview(
        kind="table", columns=columns, rows=rows[:MAX_ROWS],
        truncated=len(rows) > MAX_ROWS or total > MAX_ROWS, note=f"{total} rows in all",
    )


def _json(artifact: Artifact) -> Preview:
    text, truncated = _head_text(artifact)
    if not truncated:
        try:
            return Preview(kind="text", text=json.dumps(json.loads(text), indent=2)[:MAX_BYTES])
        except ValueError:
            pass
    return _text_from(text, truncated)


def _text_from(text: str, truncated: bool) -> Preview:
    lines = text.splitlines()
    return Preview(kind="text", text="\n".join(lines[:200]), truncated=truncated or len(lines) > 200)


def preview_for(artifact: Artifact) -> Preview:
    """The artifact's first rows or lines, with the workspace's secrets masked (the file itself
    is kept as written)."""
    preview = _preview(artifact)
    wid = artifact.workspace_id
    preview.text = mask_text(wid, preview.text)
    preview.columns, preview.rows = mask_value(wid, preview.columns), mask_value(wid, preview.rows)
    return preview


def _preview(artifact: Artifact) -> Preview:
    if not artifact.stored:
        return Preview(kind="none", note=f"Kept outside Control Room, at {artifact.location}.")
    media = artifact.media_type
    name = artifact.name.lower()
    if media == "text/csv" or name.endswith(".csv"):
        return _csv(artifact)
    if "parquet" in media or name.endswith(".parquet"):
        return _parquet(artifact)
    if media in ("application/json", "application/x-ndjson") or name.endswith((".json", ".jsonl")):
        return _json(artifact)
    if media.startswith("text/") or name.endswith((".txt", ".log", ".sql", ".md", ".yaml", ".yml")):
        return _text_from(*_head_text(artifact))
    return Preview(kind="none", note="No preview for this type; download it instead.")
