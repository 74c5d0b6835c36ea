"""Artifacts: content-addressed storage, bounded previews, streamed downloads, scoping."""

import hashlib
import json

import duckdb
import pytest

from artifacts.models import Artifact, Blob
from artifacts.previews import MAX_ROWS, preview_for
from artifacts.services import blob_store_file
from artifacts.storage import get_store

pytestmark = pytest.mark.django_db


def artifact_from_file(workspace, path, name: str, media_type: str) -> Artifact:
    blob = blob_store_file(workspace=workspace, path=path)
    return Artifact.objects.create(workspace=workspace, name=name, media_type=media_type, sha256=blob.sha256,
                                   size=blob.size, blob=blob)


def register(world, tmp_path, name: str, content: bytes, media_type: str, workspace=None) -> Artifact:
    path = tmp_path / f"src-{name}"
    path.write_bytes(content)
    return artifact_from_file(workspace or world.workspace, path, name, media_type)


def test_same_bytes_are_stored_once(world, tmp_path):
    a = register(world, tmp_path, "a.txt", b"same bytes\n", "text/plain")
    b = register(world, tmp_path, "b.txt", b"same bytes\n", "text/plain", workspace=world.other)
    assert a.blob_id == hashlib.sha256(b"same bytes\n").hexdigest() == b.blob_id
    assert Blob.objects.count() == 1 and Blob.objects.get().size == 11
    assert get_store().open(a.blob_id).read() == b"same bytes\n"
    assert not list((get_store().root / "tmp").iterdir())


def test_csv_preview_shows_only_the_first_rows(world, tmp_path):
    rows = "\n".join(f"{i},name{i}" for i in range(10_000))
    artifact = register(world, tmp_path, "big.csv", f"id,name\n{rows}\n".encode(), "text/csv")
    preview = preview_for(artifact)
    assert preview.kind == "table" and preview.columns == ["id", "name"]
    assert len(preview.rows) == MAX_ROWS and preview.rows[0] == ["0", "name0"] and preview.truncated


def test_parquet_preview_reads_first_rows_and_counts_all(world, tmp_path):
    path = tmp_path / "t.parquet"
    duckdb.sql(f"COPY (SELECT range AS n, 'x' || range AS s FROM range(100000)) TO '{path}' (FORMAT PARQUET)")
    artifact = artifact_from_file(world.workspace, path, "t.parquet", "application/vnd.apache.parquet")
    preview = preview_for(artifact)
    assert preview.columns == ["n", "s"] and preview.rows[1] == [1, "x1"] and len(preview.rows) == MAX_ROWS
    assert preview.note == "100000 rows in all" and preview.truncated


def test_json_and_text_previews_are_bounded(world, tmp_path):
    small = register(world, tmp_path, "m.json", json.dumps({"b": 1, "a": [1, 2]}).encode(), "application/json")
    assert preview_for(small).text == json.dumps({"b": 1, "a": [1, 2]}, indent=2)
    big = register(world, tmp_path, "big.log", b"line\n" * 1_000_000, "text/plain")
    preview = preview_for(big)
    assert preview.kind == "text" and preview.truncated and len(preview.text) <= 64 * 1024
    binary = register(world, tmp_path, "x.bin", b"\x00\x01", "application/octet-stream")
    assert preview_for(binary).kind == "none"


def test_pages_download_and_scoping(world, tmp_path):
    artifact = register(world, tmp_path, "report.csv", b"country,revenue\nDE,10.50\n", "text/csv")
    client = world.client("viewer")
    assert "report.csv" in client.get("/w/acme/artifacts/").content.decode()
    detail = client.get(f"/w/acme/artifacts/{artifact.pk}/").content.decode()
    assert "<th>country</th>" in detail and "10.50" in detail and artifact.blob_id in detail
    download = client.get(f"/w/acme/artifacts/{artifact.pk}/download")
    assert download.streaming and b"".join(download.streaming_content) == b"country,revenue\nDE,10.50\n"
    assert download["Content-Disposition"] == 'attachment; filename="report.csv"'
    assert world.client("outsider").get(f"/w/acme/artifacts/{artifact.pk}/").status_code == 404
    assert world.client("outsider").get(f"/w/other/artifacts/{artifact.pk}/download").status_code == 404
