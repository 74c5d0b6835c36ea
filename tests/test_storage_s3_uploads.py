"""The S3 store's multipart uploads on SeaweedFS: a few parts in flight (never more than the limit),
a failed part aborts the whole upload (no key, no pending multipart upload), and a commit's copy
goes as ranged part copies that come back whole or leave nothing."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from artifacts.storage import BlobStoreError, get_store
from artifacts.storage.s3 import S3Store
from tests.s3_fixtures import s3_store_settings

pytestmark = [pytest.mark.slow, pytest.mark.once]


@pytest.fixture
def s3_store(s3_server, settings) -> S3Store:
    s3_store_settings(settings, s3_server, s3_server.bucket("uploads"))
    store = get_store()
    assert isinstance(store, S3Store)
    return store


def everything(store: S3Store) -> list[str]:
    """Every object key and every pending multipart upload in the store's bucket."""
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", ())
    return sorted(keys + [f"upload:{upload['Key']}" for upload in uploads])


def on_request(store: S3Store, event: str, handler: Callable[..., None]) -> Callable[[], None]:
    """Hook ``handler`` on the store's real client (botocore events); returns the unhook."""
    store.client.meta.events.register(event, handler, unique_id=f"test-{id(handler)}")
    return lambda: store.client.meta.events.unregister(event, unique_id=f"test-{id(handler)}")


def spoil_part(number: int) -> Callable[..., None]:
    """Send part ``number`` to an upload that does not exist: the server itself refuses it."""

    def handler(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber") == number:
            params["UploadId"] = "no-such-upload-" + params["UploadId"]

    return handler


def test_parts_go_out_several_at_once_but_never_more_than_the_limit(s3_store):
    s3_store.parts_in_flight = 2
    data = os.urandom(s3_store.part_bytes * 5 + 99)
    both_started = threading.Barrier(2, timeout=60)  # a writer sending one part at a time breaks it
    lock, running, most = threading.Lock(), [0], [0]

    def before(params: dict[str, Any], **_: Any) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if params["PartNumber"] in (1, 2):
            both_started.wait()

    def after(**_: Any) -> None:
        with lock:
            running[0] -= 1

    unhook = [on_request(s3_store, "before-parameter-build.s3.UploadPart", before),
              on_request(s3_store, "after-call.s3.UploadPart", after)]
    try:
        writer = s3_store.writer()
        for start in range(0, len(data), 64 * 1024):
            writer.write(data[start:start + 64 * 1024])
        staged = writer.finish()
    finally:
        for undo in unhook:
            undo()
    assert most[0] == 2 and running[0] == 0
    s3_store.commit(staged)
    with s3_store.open(staged.sha256) as stream:
        assert stream.read() == data
    assert everything(s3_store) == [s3_store.blob_key(staged.sha256)]


@pytest.mark.parametrize("how", ["writer", "stage_file"])
def test_a_failed_part_aborts_the_whole_upload(s3_store, tmp_path, how):
    data = os.urandom(s3_store.part_bytes * 6 + 5)
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    spoil, order, aborting, mine = spoil_part(3), [], threading.Event(), threading.local()

    def before(params: dict[str, Any], **kwargs: Any) -> None:
        spoil(params)
        mine.number = params["PartNumber"]
        if mine.number == 4:  # still in flight when part 3's refusal is seen
            aborting.wait(timeout=5)

    def abort(**_: Any) -> None:
        order.append("abort")
        aborting.set()

    unhook = [on_request(s3_store, "before-parameter-build.s3.UploadPart", before),
              on_request(s3_store, "after-call.s3.UploadPart", lambda **_: order.append(mine.number)),
              on_request(s3_store, "before-parameter-build.s3.AbortMultipartUpload", abort)]
    try:
        with pytest.raises(BlobStoreError, match="while uploading"):
            if how == "stage_file":
                s3_store.stage_file(source)
            else:
                writer = s3_store.writer()
                for start in range(0, len(data), 1 << 20):
                    writer.write(data[start:start + (1 << 20)])
                writer.finish()
    finally:
        for undo in unhook:
            undo()
    # The abort waited for the part in flight (a part landing after it would outlive it on S3).
    assert 4 in order and order.index(4) < order.index("abort") and order.count("abort") == 1
    assert s3_store.client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []
    assert everything(s3_store) == []
    assert not s3_store.exists(hashlib.sha256(data).hexdigest())
    staged = s3_store.stage_file(source)  # unhooked, the same bytes go through
    s3_store.commit(staged)
    assert s3_store.read_range(staged.sha256, len(data) - 10, 10) == data[-10:]


def test_a_commit_copies_by_ranged_parts_whole_or_not_at_all(s3_store):
    s3_store.copy_part_bytes = 5 * 2**20  # S3's smallest part
    data = os.urandom(s3_store.part_bytes * 2 + 12345)
    sha = hashlib.sha256(data).hexdigest()
    refused = s3_store.stage(io.BytesIO(data))
    unhook = on_request(s3_store, "before-parameter-build.s3.UploadPartCopy", spoil_part(2))
    try:
        with pytest.raises(BlobStoreError, match="while storing a blob"):
            s3_store.commit(refused)
    finally:
        unhook()
    assert not s3_store.exists(sha)
    assert [k for k in everything(s3_store) if not k.startswith("controlroom/staging/")] == []
    s3_store.discard(refused)  # as the callers do after a failed commit
    assert everything(s3_store) == []
    staged = s3_store.stage(io.BytesIO(data))
    s3_store.commit(staged)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.blob_key(sha))
    assert head["ETag"].endswith('-4"') and head["ContentLength"] == len(data)  # 5 + 5 + 5 + 1 MiB
    with s3_store.open(sha) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == sha
    assert everything(s3_store) == [s3_store.blob_key(sha)]  # the staging key is gone
