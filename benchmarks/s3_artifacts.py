"""S3 artifacts: a 1 GB blob uploaded and downloaded through the artifact store vs. bare boto3
(``upload_fileobj`` / ``get_object``) on the same SeaweedFS, in the same run. Each step runs in a
fresh process that reports its seconds and peak RSS (VmHWM), so the store's memory is its own;
the same steps at a quarter of the size show whether memory stays flat. The S3 server's (SeaweedFS)
RSS is sampled during every step too. Uploads run in interleaved rounds (bare, then each store
step) and medians are compared, plus one bare upload with a single part in flight (as the store
sent its parts before it kept a few in flight); downloads run three interleaved rounds too.

Store steps: ``writer`` (bytes arriving in 64 KiB chunks, as an HTTP upload does: multipart to a
staging key, a few parts in flight, then commit = server-side copy, as ranged part copies);
``declared``, the same writer told the sha256 before the bytes (as the standalone executor sends
it in X-Content-SHA256: multipart straight to the content key, commit = complete, no copy; the
sender's hashing is not timed, it hashes the file anyway for the artifact's fields);
``stage_file`` (a file on disk: hashed first, then multipart straight to its content key, commit =
complete); and the download as the view serves it (``FileResponse`` over ``store.open``, 1 MiB
blocks). The store's upload memory is bounded by its parts in flight (PARTS_IN_FLIGHT + 1 parts of
PART_BYTES), so its peak RSS is the same at a quarter of the size.

    .venv/bin/python benchmarks/s3_artifacts.py [--mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first

BLOCK = 1 << 20
BUCKET = "bench"


class Generated:
    """``size`` bytes, different for each ``seed``, produced as they are read (no file, no memory)."""

    def __init__(self, size: int, seed: int) -> None:
        self.left, self.seed, self.index = size, seed, 0
        self.block = bytearray(os.urandom(BLOCK))

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = bytearray()
        while len(out) < n:
            self.block[:16] = f"{self.seed:08d}{self.index:08d}".encode()
            self.index += 1
            out += self.block[: n - len(out)]
        self.left -= n
        return bytes(out)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def child(step: str, size: int, seed: int, arg: str) -> dict:
    """One step in this (fresh) process."""
    import boto3
    import django

    django.setup()
    from django.http import FileResponse

    from artifacts.storage import get_store

    store = get_store()
    floor = peak_rss_mb()
    began = time.monotonic()
    out: dict = {}
    if step == "store_writer":
        source, writer = Generated(size, seed), store.writer()
        while chunk := source.read(64 * 1024):
            writer.write(chunk)
        staged = writer.finish()
        staged_at = time.monotonic()
        store.commit(staged)
        out = {"sha256": staged.sha256, "commit_s": time.monotonic() - staged_at,
               "in_flight": getattr(store, "parts_in_flight", 1)}
    elif step == "store_writer_declared":  # the sender declared the sha256 (X-Content-SHA256)
        sha = hashlib.sha256()
        with open(arg, "rb") as fh:  # the sender's work, done before the upload: not timed
            while chunk := fh.read(BLOCK):
                sha.update(chunk)
        began = time.monotonic()
        writer = store.writer(sha256=sha.hexdigest())
        with open(arg, "rb") as fh:
            while chunk := fh.read(64 * 1024):
                writer.write(chunk)
        staged = writer.finish()
        store.commit(staged)
        out = {"sha256": staged.sha256}
    elif step == "store_file":
        staged = store.stage_file(Path(arg))
        store.commit(staged)
        out = {"sha256": staged.sha256}
    elif step == "boto3_upload":
        client = boto3.client("s3", endpoint_url=os.environ["ARTIFACT_STORE_S3_ENDPOINT"],
                              aws_access_key_id=os.environ["ARTIFACT_STORE_S3_ACCESS_KEY"],
                              aws_secret_access_key=os.environ["ARTIFACT_STORE_S3_SECRET_KEY"],
                              region_name="us-east-1")
        from boto3.s3.transfer import TransferConfig

        serial = TransferConfig(max_concurrency=1) if arg == "serial" else TransferConfig()
        client.upload_fileobj(Generated(size, seed), BUCKET, f"bare/{seed}", Config=serial)
    elif step == "store_download":
        response = FileResponse(store.open(arg), as_attachment=True, filename="x.bin")
        response.block_size = BLOCK  # as artifacts.views does
        out = {"bytes": sum(len(chunk) for chunk in response)}
        response.close()
    elif step == "boto3_download":
        client = store.client  # the same configured client, used bare
        body = client.get_object(Bucket=BUCKET, Key=arg)["Body"]
        out = {"bytes": sum(len(chunk) for chunk in iter(lambda: body.read(BLOCK), b""))}
    return {"seconds": time.monotonic() - began, "peak_rss_mb": peak_rss_mb(), "floor_rss_mb": floor, **out}


def rss_mb(pid: int) -> float:
    """The resident set of process ``pid`` now (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def median(steps: list[dict]) -> dict:
    """The step result with the median seconds."""
    return sorted(steps, key=lambda r: r["seconds"])[len(steps) // 2]


def run(step: str, size: int, seed: int, env: dict, server_pid: int, arg: str = "") -> dict:
    """One step in a fresh process; the S3 server's RSS is sampled every 0.1 s while it runs."""
    _common.say(f"{step} {size // 2**20} MB")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", step, str(size), str(seed), arg],
                                env=env, stdout=out, stderr=err, text=True)
        server_rss = [rss_mb(server_pid)]
        while proc.poll() is None:
            time.sleep(0.1)
            server_rss.append(rss_mb(server_pid))
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(err.read()[-3000:])
        result = json.loads(out.read().strip().splitlines()[-1])
    return {**result, "server_rss_mb": max(server_rss), "server_rss_before_mb": server_rss[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved upload rounds (medians compared)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, size, seed, arg = args.child
        print(json.dumps(child(step, int(size), int(seed), arg)))
        return
    from tests.servers import SeaweedServer

    size = args.mb * 2**20
    server = SeaweedServer()
    _common.say("starting SeaweedFS")
    endpoint = server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=server.key, aws_secret_access_key=server.secret,
                     region_name=server.region).create_bucket(Bucket=BUCKET)
        env = {**os.environ, "ARTIFACT_STORE_URL": f"s3://{BUCKET}/controlroom", "ARTIFACT_STORE_S3_ENDPOINT": endpoint,
               "ARTIFACT_STORE_S3_REGION": server.region, "ARTIFACT_STORE_S3_ACCESS_KEY": server.key,
               "ARTIFACT_STORE_S3_SECRET_KEY": server.secret}
        source = Path(os.environ["CONTROLROOM_DATA_DIR"]) / "blob.bin"
        with source.open("wb") as fh:
            generated = Generated(size, 99)
            while chunk := generated.read(BLOCK):
                fh.write(chunk)
        quarter_source = source.with_name("quarter.bin")
        with quarter_source.open("wb") as fh:
            generated = Generated(size // 4, 98)
            while chunk := generated.read(BLOCK):
                fh.write(chunk)
        pid = server._proc.pid
        run("boto3_upload", min(size, 64 * 2**20), 0, env, pid)  # warm-up: the server allocates its volumes
        # Uploads run in interleaved rounds (bare, writer, declared, file) and medians are compared:
        # this machine is shared, and one slow minute would otherwise decide a ratio.
        ups: dict[str, list[dict]] = {"bare": [], "writer": [], "declared": [], "file": []}
        for r in range(args.rounds):
            ups["bare"].append(run("boto3_upload", size, 100 + r, env, pid))
            ups["writer"].append(run("store_writer", size, 200 + r, env, pid))
            ups["declared"].append(run("store_writer_declared", size, 300 + r, env, pid, str(source)))
            ups["file"].append(run("store_file", size, 400 + r, env, pid, str(source)))
        bare_up, writer, declared, by_file = (median(ups[k]) for k in ("bare", "writer", "declared", "file"))
        bare_serial = run("boto3_upload", size, 10, env, pid, "serial")
        # The quarter-size uploads before any download: SeaweedFS's RSS grows by gigabytes when uploads
        # follow downloads (plain boto3 ones too), which would blur the server column's comparison.
        quarter = run("store_writer", size // 4, 6, env, pid)
        quarter_file = run("store_file", size // 4, 11, env, pid, str(quarter_source))
        bare_downs, downs = [], []
        for _ in range(3):  # downloads are short: three interleaved rounds, medians compared
            bare_downs.append(run("boto3_download", size, 4, env, pid, "bare/100"))
            downs.append(run("store_download", size, 5, env, pid, writer["sha256"]))
        quarter_down = run("store_download", size // 4, 7, env, pid, quarter["sha256"])
        _common.say("")
        mb = size / 2**20
        bare_down, down = median(bare_downs), median(downs)
        rows = [("upload, bare boto3 upload_fileobj", bare_up, None),
                ("upload, store writer (64 KiB chunks; commit = copy)", writer, bare_up),
                ("upload, store writer, sha256 declared (no copy)", declared, bare_up),
                ("upload, store stage_file (hash, then direct)", by_file, bare_up),
                ("upload, bare boto3, one part at a time", bare_serial, None),
                ("download, bare boto3 get_object", bare_down, None),
                ("download, store FileResponse", down, bare_down)]
        print(f"SeaweedFS {endpoint}, blob {mb:.0f} MB")
        print(f"medians of {args.rounds} interleaved rounds; ratio: throughput against bare boto3 (target >= 0.8); "
              "peak RSS: the process doing the step (VmHWM),\nfloor: the same after its imports; S3 server: "
              "SeaweedFS's RSS sampled during it")
        print(f"{'step':55} {'s':>7} {'MB/s':>7} {'ratio':>6} {'peak RSS MB':>12} {'floor':>6} "
              f"{'S3 server MB':>13}")
        for name, got, base in rows:
            ratio = f"{base['seconds'] / got['seconds']:.2f}" if base else "-"
            print(f"{name:55} {got['seconds']:7.2f} {mb / got['seconds']:7.1f} {ratio:>6} "
                  f"{got['peak_rss_mb']:12.0f} {got['floor_rss_mb']:6.0f} "
                  f"{got['server_rss_before_mb']:5.0f} -> {got['server_rss_mb']:4.0f}")
        for label, key in (("bare", "bare"), ("store writer", "writer"), ("declared", "declared"),
                           ("stage_file", "file")):
            print(f"upload seconds, {label}: " + ", ".join(f"{r['seconds']:.2f}" for r in ups[key]))
        print("download seconds, bare: " + ", ".join(f"{r['seconds']:.2f}" for r in bare_downs)
              + "; store: " + ", ".join(f"{r['seconds']:.2f}" for r in downs))
        print(f"store writer commit (server-side copy, {writer['in_flight']} ranged parts in flight): "
              f"{writer['commit_s']:.2f} s of {writer['seconds']:.2f} s; the writer without it: ratio "
              f"{bare_up['seconds'] / (writer['seconds'] - writer['commit_s']):.2f}")
        print(f"flat memory: store writer peak RSS {quarter['peak_rss_mb']:.0f} MB at {mb / 4:.0f} MB vs "
              f"{writer['peak_rss_mb']:.0f} MB at {mb:.0f} MB; stage_file {quarter_file['peak_rss_mb']:.0f} vs "
              f"{by_file['peak_rss_mb']:.0f} MB; download {quarter_down['peak_rss_mb']:.0f} vs "
              f"{down['peak_rss_mb']:.0f} MB; S3 server during the store writer {quarter['server_rss_mb']:.0f} vs "
              f"{writer['server_rss_mb']:.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
