"""Artifacts, stored query results and exports through the store, on local disk and on S3: uploads
stream in, downloads and exports stream out, previews and pages read by range, workspaces stay
apart."""

from __future__ import annotations

import csv
import hashlib
import io

import duckdb
import pyarrow.parquet as pq
import pytest

from artifacts.models import Artifact, BlobGrant
from artifacts.previews import MAX_ROWS, preview_for
from sqlwarehouse.results import read_page
from tests.test_blob_isolation import SECRET, Phase, acme, hostile  # noqa: F401 (fixtures)
from tests.test_sqlwarehouse import run_sql
from tests.test_storage_blobs import blob_keys, everything

pytestmark = pytest.mark.django_db


def md5(n: int) -> str:
    return hashlib.md5(str(n).encode(), usedforsecurity=False).hexdigest()


@pytest.fixture(autouse=True)
def _eager(eager_celery):
    """Queries run in-process when their submit commits."""


def count_reads(monkeypatch, store) -> list[int]:
    """Record the length of every ranged read the store serves from now on."""
    got: list[int] = []
    real = type(store).read_range
    monkeypatch.setattr(type(store), "read_range",
                        lambda self, sha, start, length: got.append(length) or real(self, sha, start, length))
    return got


def test_upload_download_and_preview_through_the_store(blob_store, acme, world):  # noqa: F811
    data = b"country,revenue\n" + b"".join(f"C{i},{i}.50\n".encode() for i in range(5000))
    answer = acme.upload(data, name="revenue.csv")
    assert answer.status_code == 201, answer.content
    artifact = Artifact.objects.get()
    assert blob_store.exists(artifact.sha256) and everything(blob_store) == blob_keys(blob_store)
    client = world.client("viewer")
    detail = client.get(f"/w/acme/artifacts/{artifact.pk}/").content.decode()
    assert "<th>country</th>" in detail and "C49" in detail and "C50," not in detail
    download = client.get(f"/w/acme/artifacts/{artifact.pk}/download")
    assert download.streaming and int(download["Content-Length"]) == len(data)
    assert b"".join(download.streaming_content) == data
    assert world.client("outsider").get(f"/w/acme/artifacts/{artifact.pk}/download").status_code == 404


def test_a_refused_upload_leaves_nothing_in_the_store(blob_store, acme, settings):  # noqa: F811
    data = b"z" * 20_000
    wrong = acme.upload(data, sha256="b" * 64)
    assert wrong.status_code == 400 and "hash to" in wrong.json()["error"]["message"]
    settings.ARTIFACT_UPLOAD_MAX_BYTES = 10_000
    too_big = acme.upload(data)  # the form's Content-Length is over the limit: refused before the body
    assert too_big.status_code == 413
    assert not Artifact.objects.exists() and everything(blob_store) == []


def test_a_workspace_cannot_reach_another_workspaces_blob(blob_store, acme, hostile, world):  # noqa: F811
    assert acme.upload().status_code == 201
    stolen, unknown = hostile.by_hash(), hostile.by_hash(sha256="d" * 64)
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert not BlobGrant.objects.filter(workspace=world.other).exists()
    assert world.client("outsider").get(f"/w/other/artifacts/{Artifact.objects.get().pk}/download").status_code == 404
    # Uploading the same bytes gives the other workspace its own grant, and the store one copy.
    assert hostile.upload().status_code == 201
    assert BlobGrant.objects.filter(workspace=world.other).exists() and len(blob_keys(blob_store)) == 1
    assert blob_store.read_range(hashlib.sha256(SECRET).hexdigest(), 0, 4) == SECRET[:4]


def test_parquet_preview_reads_the_footer_and_first_row_group_only(blob_store, world, tmp_path, monkeypatch):
    from artifacts.services import blob_store_file

    path = tmp_path / "t.parquet"
    duckdb.sql(f"COPY (SELECT range AS n, md5(range::VARCHAR) AS s FROM range(100000)) TO '{path}' "
               "(FORMAT PARQUET, ROW_GROUP_SIZE 10000, COMPRESSION uncompressed)")
    blob = blob_store_file(workspace=world.workspace, path=path)
    artifact = Artifact.objects.create(workspace=world.workspace, name="t.parquet", sha256=blob.sha256,
                                       size=blob.size, blob=blob, media_type="application/vnd.apache.parquet")
    got = count_reads(monkeypatch, blob_store)
    preview = preview_for(artifact)
    assert preview.columns == ["n", "s"] and preview.rows[1][0] == 1 and len(preview.rows) == MAX_ROWS
    assert preview.note == "100000 rows in all" and preview.truncated
    assert 0 < sum(got) < blob.size / 5, (sum(got), blob.size)  # one of ten row groups, and the footer


@pytest.mark.slow  # ~1.2 s on local disk too
def test_result_pages_read_only_their_row_groups_and_exports_stream(blob_store, world, monkeypatch):
    # The progress watcher would wait on SQLite's write lock, held by the test's transaction.
    monkeypatch.setattr("sqlwarehouse.execution.WATCH_S", 600)
    monkeypatch.setattr("sqlwarehouse.results.ROW_GROUP_ROWS", 10_000)  # three row groups, quickly
    execution = run_sql(world, "analyst", "SELECT range AS n, 'r' || range AS label, md5(range::VARCHAR) AS h "
                                          "FROM range(30000)")
    assert execution.status == "succeeded" and execution.row_count == 30_000, execution.error
    blob = execution.result
    assert blob_store.exists(blob.sha256)
    got = count_reads(monkeypatch, blob_store)
    assert read_page(blob, offset=15_000, limit=100) == [[15_000 + i, f"r{15_000 + i}", md5(15_000 + i)]
                                                                 for i in range(100)]
    assert sum(got) < blob.size / 2, (sum(got), blob.size)  # the footer and one of three row groups
    got.clear()
    assert read_page(blob, offset=0, limit=3, sort="n", descending=True)[0][:2] == [29_999, "r29999"]
    assert sum(got) >= blob.size * 0.9  # a sort reads it all, batch by batch
    client = world.client("analyst")
    page = client.get(f"/w/acme/sql/executions/{execution.pk}/?page=150").content.decode()
    assert "<td>r14999</td>" in page
    exported = client.get(f"/w/acme/sql/executions/{execution.pk}/export.csv")
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0] == ["n", "label", "h"] and len(rows) == 30_001 and rows[-1] == ["29999", "r29999", md5(29_999)]
    parquet = client.get(f"/w/acme/sql/executions/{execution.pk}/export.parquet")
    assert int(parquet["Content-Length"]) == blob.size
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.num_rows == 30_000 and table.column_names == ["n", "label", "h"]
    assert world.client("operator").get(f"/w/acme/sql/executions/{execution.pk}/export.csv").status_code == 404
