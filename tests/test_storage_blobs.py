"""The blob-store protocol, on local disk and on S3 (SeaweedFS): staging is invisible until commit,
refused bytes leave nothing, multipart beyond one part, ranged reads, clear errors."""

from __future__ import annotations

import hashlib
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from artifacts.storage import BlobHashMismatch, BlobStore, BlobStoreError, BlobTooLarge, get_store
from artifacts.storage.local import LocalStore
from artifacts.storage.s3 import S3Store
from tests.s3_fixtures import s3_store_settings


def everything(store) -> list[str]:
    """Every file, object and open multipart upload the store holds."""
    if isinstance(store, LocalStore):
        found = store.root.rglob("*") if store.root.exists() else []
        return sorted(str(p.relative_to(store.root)) for p in found if p.is_file())
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", ())
    return sorted(keys + [f"upload:{u['Key']}" for u in uploads])


def blob_keys(store) -> list[str]:
    """The visible blobs only."""
    return [k for k in everything(store) if k.startswith(("sha256/", "controlroom/blobs/"))]


def data_of(size: int) -> bytes:
    return (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]


def test_stage_commit_open_range_and_dedupe(blob_store):
    assert isinstance(blob_store, BlobStore)
    data = data_of(100_000)
    sha = hashlib.sha256(data).hexdigest()
    staged = blob_store.stage(io.BytesIO(data))
    assert (staged.sha256, staged.size) == (sha, len(data))
    assert not blob_store.exists(sha) and blob_keys(blob_store) == []
    blob_store.commit(staged)
    blob_store.discard(staged)  # a no-op once committed
    assert blob_store.exists(sha) and blob_store.size(sha) == len(data)
    with blob_store.open(sha) as stream:
        assert stream.read() == data
    assert blob_store.read_range(sha, 99_990, 100) == data[99_990:]
    assert blob_store.read_range(sha, 10, 0) == b""
    with blob_store.open_random(sha) as fh:
        fh.seek(-5, io.SEEK_END)
        assert fh.read() == data[-5:] and fh.tell() == len(data)
    again = blob_store.stage(io.BytesIO(data))
    blob_store.commit(again)  # equal bytes: the second copy is dropped
    assert len(blob_keys(blob_store)) == 1 and everything(blob_store) == blob_keys(blob_store)
    with pytest.raises(FileNotFoundError):
        blob_store.open("e" * 64)
    with pytest.raises(FileNotFoundError):
        blob_store.size("../../etc/passwd")


def test_an_upload_larger_than_one_part_streams_and_comes_back_whole(blob_store, tmp_path):
    part = getattr(blob_store, "part_bytes", 8 * 2**20)
    data = os.urandom(part * 2 + 12345)
    sha = hashlib.sha256(data).hexdigest()
    writer = blob_store.writer()
    for start in range(0, len(data), 64 * 1024):  # as an HTTP upload arrives
        writer.write(data[start:start + 64 * 1024])
    staged = writer.finish()
    assert blob_keys(blob_store) == []
    blob_store.commit(staged)
    assert everything(blob_store) == blob_keys(blob_store)  # the staging key is gone
    with blob_store.open(sha) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == sha
    # A file is hashed first and goes to its content key directly (on S3, no copy).
    source = tmp_path / "big.bin"
    source.write_bytes(data[::-1])
    staged_file = blob_store.stage_file(source)
    assert not blob_store.exists(staged_file.sha256)  # an open upload is never a blob
    blob_store.commit(staged_file)
    assert blob_store.read_range(staged_file.sha256, part - 3, 6) == data[::-1][part - 3:part + 3]
    if isinstance(blob_store, S3Store):
        head = blob_store.client.head_object(Bucket=blob_store.bucket, Key=blob_store.blob_key(staged_file.sha256))
        assert head["ETag"].endswith('-3"')  # three parts, completed in place
    assert everything(blob_store) == blob_keys(blob_store) and len(blob_keys(blob_store)) == 2


def test_an_oversized_or_aborted_upload_leaves_nothing(blob_store, tmp_path):
    part = getattr(blob_store, "part_bytes", 8 * 2**20)
    writer = blob_store.writer(max_bytes=part + 10)
    writer.write(b"x" * part)
    writer.write(b"y" * 5)  # on S3 the first part is already uploaded
    with pytest.raises(BlobTooLarge):
        writer.write(b"z" * 100)
    assert everything(blob_store) == []
    started = blob_store.writer()
    started.write(b"w" * (part + 1))
    started.abort()
    assert everything(blob_store) == []
    for staged in (blob_store.stage(io.BytesIO(b"q" * (part + 7))), blob_store.stage(io.BytesIO(b"small"))):
        blob_store.discard(staged)  # refused after staging (wrong hash, lost lease)
    source = tmp_path / "f.bin"
    source.write_bytes(b"f" * (part * 2))
    blob_store.discard(blob_store.stage_file(source))
    assert everything(blob_store) == []


def test_a_declared_sha256_is_checked_and_saves_the_copy(blob_store):
    """A writer told the sha256 in advance stages in place (S3: on the content key, completed at
    commit with no copy); bytes that do not match are refused and nothing is left."""
    part = getattr(blob_store, "part_bytes", 8 * 2**20)
    data = data_of(part * 2 + 99)
    sha = hashlib.sha256(data).hexdigest()
    liar = blob_store.writer(sha256=hashlib.sha256(b"other").hexdigest())
    liar.write(data)
    with pytest.raises(BlobHashMismatch, match="do not match"):
        liar.finish()
    assert everything(blob_store) == []
    if isinstance(blob_store, S3Store):
        assert blob_store.client.list_multipart_uploads(Bucket=blob_store.bucket).get("Uploads", []) == []
    honest = blob_store.writer(sha256=sha)
    for start in range(0, len(data), 64 * 1024):
        honest.write(data[start:start + 64 * 1024])
    staged = honest.finish()
    assert not blob_store.exists(sha)  # still invisible until commit
    blob_store.commit(staged)
    assert blob_store.read_range(sha, part - 2, 4) == data[part - 2:part + 2]
    assert everything(blob_store) == blob_keys(blob_store) and len(blob_keys(blob_store)) == 1
    if isinstance(blob_store, S3Store):
        head = blob_store.client.head_object(Bucket=blob_store.bucket, Key=blob_store.blob_key(sha))
        assert head["ETag"].endswith('-3"')  # the uploaded parts themselves: no copy was made


def test_a_half_written_upload_is_never_visible(blob_store):
    part = getattr(blob_store, "part_bytes", 8 * 2**20)
    data = data_of(part * 2 + 1)
    sha = hashlib.sha256(data).hexdigest()
    writer = blob_store.writer()
    writer.write(data[: part * 2])  # two parts out, the writer still open
    assert not blob_store.exists(sha) and blob_keys(blob_store) == []
    writer.write(data[part * 2:])
    staged = writer.finish()
    assert not blob_store.exists(sha) and blob_keys(blob_store) == []
    with pytest.raises(FileNotFoundError):
        blob_store.read_range(sha, 0, 10)
    blob_store.commit(staged)
    assert blob_store.exists(sha)


def test_pyarrow_reads_the_footer_and_one_row_group_by_range(blob_store, tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    table = pa.table({"n": pa.array(range(40_000)), "s": pa.array([f"row {i}" for i in range(40_000)])})
    pq.write_table(table, path, row_group_size=10_000, compression="none")
    staged = blob_store.stage_file(path)
    blob_store.commit(staged)
    got: list[int] = []
    real = type(blob_store).read_range
    monkeypatch.setattr(type(blob_store), "read_range",
                        lambda self, sha, start, length: got.append(length) or real(self, sha, start, length))
    with blob_store.open_random(staged.sha256, size=staged.size) as fh:
        parquet = pq.ParquetFile(fh, pre_buffer=False)
        group = parquet.read_row_group(2, use_threads=False)
    assert group.num_rows == 10_000 and group.column("n")[0].as_py() == 20_000
    assert parquet.metadata.num_rows == 40_000
    assert staged.size * 0.2 < sum(got) < staged.size * 0.35, (sum(got), staged.size)


@pytest.mark.slow
@pytest.mark.once
def test_bad_s3_credentials_are_one_clear_sentence(s3_server, settings):
    bucket = s3_server.bucket("creds")
    s3_store_settings(settings, s3_server, bucket)
    get_store().check()  # the right key pair passes
    settings.ARTIFACT_STORE_S3_SECRET_KEY = "not-the-secret"
    store = get_store()
    for attempt in (store.check, lambda: store.stage(io.BytesIO(b"x" * (store.part_bytes + 1))),
                    lambda: store.open("a" * 64)):
        with pytest.raises(BlobStoreError) as caught:
            attempt()
        assert str(caught.value) == (f"The artifact store (s3://{bucket}/controlroom) refused Control Room's S3 "
                                     "credentials; check them.")
    with pytest.raises(SystemCheckError, match="refused Control Room's S3 credentials"):
        call_command("check", "--deploy", tags=["artifact_store"])
    settings.ARTIFACT_STORE_S3_SECRET_KEY = s3_server.secret
    settings.ARTIFACT_STORE_URL = "s3://no-such-bucket-here/x"
    with pytest.raises(BlobStoreError, match="bucket 'no-such-bucket-here' does not exist"):
        get_store().check()
    assert s3_server.keys(bucket) == []


def test_an_unknown_store_url_is_refused(settings):
    settings.ARTIFACT_STORE_URL = "ftp://example.com/x"
    with pytest.raises(ImproperlyConfigured, match="file:// or s3://"):
        get_store()
