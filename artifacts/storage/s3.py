"""S3 (``s3://bucket/prefix``, boto3): AWS or any S3 server (SeaweedFS in the tests).

Keys: ``<prefix>/blobs/<sha[:2]>/<sha>`` for blobs, ``<prefix>/staging/<uuid>`` while staging.
A writer streams bytes as a multipart upload, PARTS_IN_FLIGHT parts at once on a few threads (one
request at a time left most of the bandwidth unused), so memory stays flat whatever the size: the
parts in flight plus the one filling, (PARTS_IN_FLIGHT + 1) * PART_BYTES. A failed part aborts the
whole upload once the parts still in flight have landed. Commit depends on what staging left:
- a blob smaller than one part is still in memory: one PUT to its content key;
- a file staged by ``stage_file`` (hashed first, so its key was known) is a multipart upload
  still open on the content key: commit completes it (no copy), discard aborts it;
- a stream of unknown hash was completed under a staging key: commit copies it server-side to
  the content key (skipped when the blob exists) and deletes the staging key. A key cannot be
  renamed in S3 and the hash is known only at the end, so this copy stays; above COPY_PART_BYTES
  it is a multipart copy (UploadPartCopy of ranges, a few at once), complete or aborted.
An open multipart upload and a staging key are never read as a blob, so half-written bytes are
never visible. (A process killed mid-upload leaves them behind: an abort-incomplete-multipart
lifecycle rule and an expiry on ``staging/`` clean them up.)
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from artifacts.storage.base import CHUNK, BlobHashMismatch, BlobStoreError, BlobWriter, StagedBlob, StoreOps

log = logging.getLogger(__name__)
PART_BYTES = 8 * 2**20  # S3's smallest part is 5 MiB
PARTS_IN_FLIGHT = 4  # per upload; boto3's upload_fileobj keeps up to 10
COPY_PART_BYTES = 64 * 2**20  # a commit's copy: one CopyObject up to this, ranged part copies beyond
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
            "Forbidden", "403"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


@dataclass
class _Pending:
    """What a finished writer leaves for commit or discard."""

    data: bytes | None = None  # a small blob, whole
    key: str = ""  # a completed staging object, or the content key of an open upload
    upload_id: str = ""  # an open multipart upload on the content key
    parts: list[dict[str, Any]] = field(default_factory=list)


class S3Store(StoreOps):
    """Blobs in an S3 bucket, under a prefix."""

    part_bytes, parts_in_flight, copy_part_bytes = PART_BYTES, PARTS_IN_FLIGHT, COPY_PART_BYTES

    def __init__(self, *, bucket: str, prefix: str = "", endpoint: str = "", region: str = "",
                 access_key: str = "", secret_key: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix, self.endpoint = bucket, prefix.strip("/"), endpoint
        credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key} if access_key else {}
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5, read_timeout=120, max_pool_connections=20)
        # With no key in the settings, boto3's own chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, roles.
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint or None,
                                                     region_name=region or None, config=config, **credentials)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def blob_key(self, sha256: str) -> str:
        """The content key of a blob."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise FileNotFoundError(f"no blob {sha256[:70]!r}")
        return self._key("blobs", sha256[:2], sha256)

    def fail(self, exc: Exception, doing: str) -> BlobStoreError | FileNotFoundError:
        """The error to raise for a boto3 failure: FileNotFoundError for a missing blob, else one
        clear sentence (the detail goes to the log)."""
        from botocore.exceptions import ClientError

        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        where = f"s3://{self.bucket}/{self.prefix}"
        if code in _MISSING:
            return FileNotFoundError(f"{doing}: no such object in {where}")
        log.error("artifact store %s failed while %s: %r", where, doing, exc)
        if code in _REFUSED:
            message = f"The artifact store ({where}) refused Control Room's S3 credentials; check them."
        elif code == "NoSuchBucket":
            message = f"The artifact store's bucket {self.bucket!r} does not exist."
        elif code:
            message = f"The artifact store ({where}) answered {code} while {doing}."
        else:
            message = f"The artifact store ({where}) cannot be reached at {self.endpoint or 'AWS'}."
        return BlobStoreError(message)

    def call(self, doing: str, method: str, **kwargs: Any) -> Any:
        """``self.client.<method>(**kwargs)`` with failures translated by ``fail``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, doing) from exc

    # writing

    def writer(self, *, max_bytes: int | None = None, sha256: str | None = None) -> BlobWriter:
        """A writer that streams bytes into a multipart upload as they arrive. With ``sha256``
        known in advance the upload goes to the content key directly (commit needs no copy)."""
        return S3BlobWriter(self, max_bytes, sha256)

    def stage_file(self, source: Path) -> StagedBlob:
        """Hash the file first, then upload it straight to its content key (left open until commit)."""
        digest = hashlib.sha256()
        with source.open("rb") as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
        writer = S3BlobWriter(self, None, digest.hexdigest())
        try:
            with source.open("rb") as src:
                while chunk := src.read(self.part_bytes):
                    writer.write(chunk)
            return writer.finish()
        except BlobHashMismatch:
            raise BlobStoreError("The file changed while it was being stored; nothing was kept.") from None
        except BaseException:
            writer.abort()
            raise

    def commit(self, staged: StagedBlob) -> None:
        """Make staged bytes visible under their hash (equal bytes already there: drop the copy)."""
        pending: _Pending = staged.token
        final = self.blob_key(staged.sha256)
        if self.exists(staged.sha256):
            self.discard(staged)
            return
        if pending.data is not None:
            self.call("storing a blob", "put_object", Bucket=self.bucket, Key=final, Body=pending.data)
            pending.data = None
        elif pending.upload_id:
            self.call("completing an upload", "complete_multipart_upload", Bucket=self.bucket, Key=final,
                      UploadId=pending.upload_id, MultipartUpload={"Parts": pending.parts})
            pending.upload_id = ""
        elif pending.key:
            self._copy(pending.key, final, staged.size)
            self.discard(staged)

    def _copy(self, source: str, target: str, size: int) -> None:
        """Server-side: one CopyObject for a small blob, else ranged part copies a few at once into a
        multipart upload on ``target`` that is completed, or aborted on any failure (nothing left)."""
        if size <= self.copy_part_bytes:
            self.call("storing a blob", "copy_object", Bucket=self.bucket, Key=target,
                      CopySource={"Bucket": self.bucket, "Key": source})
            return
        upload_id = self.call("storing a blob", "create_multipart_upload", Bucket=self.bucket,
                              Key=target)["UploadId"]
        copies = PartsInFlight(self.parts_in_flight)
        try:
            for number, start in enumerate(range(0, size, self.copy_part_bytes), start=1):
                end = min(start + self.copy_part_bytes, size) - 1
                copies.submit(self._copy_part, source, target, upload_id, number, f"bytes={start}-{end}")
            self.call("storing a blob", "complete_multipart_upload", Bucket=self.bucket, Key=target,
                      UploadId=upload_id, MultipartUpload={"Parts": copies.drain()})
        except BaseException:
            copies.cancel()
            self.abort_upload(target, upload_id)
            raise

    def _copy_part(self, source: str, target: str, upload_id: str, number: int, byte_range: str) -> dict[str, Any]:
        copied = self.call("storing a blob", "upload_part_copy", Bucket=self.bucket, Key=target, UploadId=upload_id,
                           PartNumber=number, CopySource={"Bucket": self.bucket, "Key": source},
                           CopySourceRange=byte_range)
        return {"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]}

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload while already failing: a second error is logged, not raised."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.exception("could not abort the multipart upload of %s", key)

    def discard(self, staged: StagedBlob) -> None:
        """Drop staged bytes; a no-op once committed."""
        pending: _Pending = staged.token
        pending.data = None
        if pending.upload_id:
            upload_id, pending.upload_id = pending.upload_id, ""
            self.call("dropping an upload", "abort_multipart_upload", Bucket=self.bucket,
                      Key=self.blob_key(staged.sha256), UploadId=upload_id)
        if pending.key:
            key, pending.key = pending.key, ""
            self.call("dropping an upload", "delete_object", Bucket=self.bucket, Key=key)

    # reading

    def open(self, sha256: str) -> BinaryIO:
        """The blob's body, streamed from S3 as it is read."""
        return self.call("reading a blob", "get_object", Bucket=self.bucket, Key=self.blob_key(sha256))["Body"]

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """One ranged GET."""
        if length <= 0:
            return b""
        answer = self.call("reading a blob", "get_object", Bucket=self.bucket, Key=self.blob_key(sha256),
                           Range=f"bytes={start}-{start + length - 1}")
        with answer["Body"] as body:
            return body.read()

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        try:
            self.size(sha256)
        except FileNotFoundError:
            return False
        return True

    def size(self, sha256: str) -> int:
        """The blob's length (one HEAD)."""
        head = self.call("reading a blob", "head_object", Bucket=self.bucket, Key=self.blob_key(sha256))
        return int(head["ContentLength"])

    def check(self) -> None:
        """One signed request: the bucket exists and the credentials are accepted."""
        try:
            self.call("checking the bucket", "list_objects_v2", Bucket=self.bucket, MaxKeys=1,
                      Prefix=self._key("blobs") + "/")
        except FileNotFoundError:  # a 404 on the bucket itself
            raise BlobStoreError(f"The artifact store's bucket {self.bucket!r} does not exist.") from None

    def delete_all(self) -> None:
        """Remove every object and open upload under the prefix (tests)."""
        prefix = self._key() + "/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", ())
        for upload in uploads:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])


class PartsInFlight:
    """Part requests of one multipart upload run on their own threads, at most ``limit`` at once:
    ``submit`` waits for a free slot, so the bytes held are at most ``limit`` parts. A part's error
    is raised by the next ``submit`` or by ``drain``; ``cancel`` drops the queued parts and waits for
    the running ones (a part landing after the abort would outlive it)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[Future[dict[str, Any]]] = set()
        self._parts: list[dict[str, Any]] = []

    def submit(self, send: Callable[..., dict[str, Any]], *args: Any) -> None:
        """Run ``send(*args)`` (it returns the part's ``{"PartNumber", "ETag"}``) once a slot is free."""
        while len(self._running) >= self.limit:
            self._collect(FIRST_COMPLETED)
        if self._pool is None:  # threads only for uploads of more than one part
            self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="s3-part")
        self._running.add(self._pool.submit(send, *args))

    def drain(self) -> list[dict[str, Any]]:
        """Wait for every part; their list in part order, for CompleteMultipartUpload."""
        self._collect(ALL_COMPLETED)
        self._close()
        return sorted(self._parts, key=lambda part: part["PartNumber"])

    def cancel(self) -> None:
        """Drop what has not started and wait for what has (errors ignored: already failing)."""
        for future in self._running:
            future.cancel()
        wait(self._running)
        self._running = set()
        self._close()

    def _collect(self, when: str) -> None:
        done, self._running = wait(self._running, return_when=when)
        for future in done:
            self._parts.append(future.result())

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


class S3BlobWriter(BlobWriter):
    """Fills one part at a time; full parts go out as a multipart upload, a few at once."""

    def __init__(self, store: S3Store, max_bytes: int | None, sha256: str | None) -> None:
        super().__init__(max_bytes, sha256)
        self.store = store
        self.key = store.blob_key(sha256) if sha256 else store._key("staging", uuid.uuid4().hex)
        self._buffer = bytearray()
        self._upload_id = ""
        self._sent = 0
        self._parts = PartsInFlight(store.parts_in_flight)

    def _keep(self, chunk: bytes) -> None:
        size = self.store.part_bytes
        if not self._buffer and len(chunk) == size:  # a whole part (stage_file reads them): no copy
            self._send(bytes(chunk))
            return
        self._buffer += chunk
        while len(self._buffer) >= size:
            with memoryview(self._buffer) as view:  # one copy of the part, not two
                part = bytes(view[:size])
            del self._buffer[:size]
            self._send(part)

    def _send(self, part: bytes) -> None:
        store = self.store
        try:
            if not self._upload_id:
                started = store.call("starting an upload", "create_multipart_upload", Bucket=store.bucket,
                                     Key=self.key)
                self._upload_id = started["UploadId"]
            self._sent += 1
            self._parts.submit(self._upload_part, self._upload_id, self._sent, part)
        except BaseException:
            self.abort()
            raise

    def _upload_part(self, upload_id: str, number: int, part: bytes) -> dict[str, Any]:
        store = self.store
        sent = store.call("uploading", "upload_part", Bucket=store.bucket, Key=self.key, UploadId=upload_id,
                          PartNumber=number, Body=part)
        return {"PartNumber": number, "ETag": sent["ETag"]}

    def _close(self) -> Any:
        if not self._upload_id:  # smaller than one part: kept for commit's single PUT
            data, self._buffer = bytes(self._buffer), bytearray()
            return _Pending(data=data)
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        try:
            parts = self._parts.drain()
        except BaseException:
            self.abort()
            raise
        if self.expected:  # left open on the content key: commit completes it
            return _Pending(upload_id=self._upload_id, parts=parts)
        store = self.store
        try:
            store.call("finishing an upload", "complete_multipart_upload", Bucket=store.bucket, Key=self.key,
                       UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        return _Pending(key=self.key)

    def abort(self) -> None:
        """Drop the buffer, let the parts in flight land, then abort the multipart upload (if one started)."""
        self._buffer = bytearray()
        self._parts.cancel()
        upload_id, self._upload_id = self._upload_id, ""
        if upload_id:
            self.store.abort_upload(self.key, upload_id)
