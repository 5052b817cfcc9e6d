"""Blob store outages: the S3 server (moto, a real HTTP server) stopped in the middle of an
ingest and of a scoring run; the local blob folder on a full disk (a small tmpfs mounted in a
private mount namespace). Each failed item gets a clear error, no image row is left without its
bytes, the sweep leaves no orphan blob once the store is back, and the next ingest works."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from doohable.config import Settings
from doohable.ingest import ingest_inputs, sweep_orphan_blobs
from doohable.model.runtime import load_scorer
from doohable.moderation_service import moderate_images
from doohable.store.blobs import BlobStore, open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image, Score
from scoring_fixtures import brightness_model
from server_support import free_port

pytestmark = pytest.mark.slow  # fault servers, a full disk, subprocesses: the whole suite runs them

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


def noise_jpeg(seed: int, side: int = 160) -> bytes:
    """An incompressible JPEG (noise) of about 2 bytes a pixel."""
    arr = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


class Moto:
    """A moto S3 server on a fixed port that the test can stop and start again (its objects
    live in the test process, so they survive a restart, as a real S3's would)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Moto, str]]:
    import boto3

    m = Moto()
    endpoint = f"http://127.0.0.1:{m.port}"
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    bucket = f"outage-{m.port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield m, f"s3://{bucket}/images"
    m.stop()


def _rows_have_bytes(settings: Settings, blobs: BlobStore) -> set[str]:
    """Every image row's bytes are stored and match; return the rows' SHA-256."""
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        shas = set(s.scalars(select(Image.sha256)))
    for sha in shas:
        assert hashlib.sha256(blobs.get(sha)).hexdigest() == sha, f"row {sha} without its bytes"
    return shas


def test_s3_stopped_during_ingest(settings: Settings, moto: tuple[Moto, str], tmp_path: Path) -> None:
    server, url = moto
    files = []
    for k in range(6):
        files.append(tmp_path / f"{k}.jpg")
        files[-1].write_bytes(noise_jpeg(k, 48))
    on_s3 = settings.model_copy(update={"blob_url": url})

    def stop_after_two(done: int, _total: int, _source: str) -> None:
        if done == 2:
            server.stop()  # the blob store goes away in the middle of the run

    report = ingest_inputs([str(f) for f in files], on_s3, on_progress=stop_after_two)
    assert report.added == 2 and len(report.rejected) == 4
    for r in report.rejected:
        assert "blob store" in r["error"] and "unreachable" in r["error"], r["error"]
    server.start()
    blobs = open_blobs(url)
    shas = _rows_have_bytes(on_s3, blobs)
    assert len(shas) == 2
    sweep_orphan_blobs(get_engine(on_s3.resolved_database_url), blobs, older_than_s=0)
    assert {sha for sha, _ in blobs.iter_blobs()} == shas, "an orphan blob survived the sweep"
    again = ingest_inputs([str(f) for f in files], on_s3)
    assert (again.added, again.duplicates, again.rejected) == (4, 2, [])
    assert len(_rows_have_bytes(on_s3, blobs)) == 6


def test_s3_stopped_during_scoring(settings: Settings, moto: tuple[Moto, str], tmp_path: Path) -> None:
    server, url = moto
    on_s3 = settings.model_copy(update={"blob_url": url})
    for k in range(6):
        (tmp_path / f"{k}.jpg").write_bytes(noise_jpeg(100 + k, 48))
    assert ingest_inputs([str(tmp_path / f"{k}.jpg") for k in range(6)], on_s3).added == 6
    blobs = open_blobs(url)
    real_get, reads = blobs.get, []

    def get_then_fail(sha: str) -> bytes:
        reads.append(sha)
        if len(reads) == 3:
            server.stop()  # the blob store goes away in the middle of the run
        return real_get(sha)

    blobs.get = get_then_fail  # type: ignore[method-assign]
    scorer = load_scorer(brightness_model(tmp_path / "b.onnx"), threads=1)
    engine = get_engine(on_s3.resolved_database_url)
    with session_scope(engine) as s:
        report = moderate_images(s, blobs, scorer, on_s3, batch_size=1)
    assert report.scored == 2 and len(report.errors) == 4
    assert all("unreachable" in e["error"] for e in report.errors), report.errors
    with session_scope(engine) as s:
        assert len(s.scalars(select(Score)).all()) == 2  # the two read before the outage are kept
        assert all(i.status == "pending" for i in s.scalars(select(Image)))  # nothing approved unchecked
    server.start()
    blobs.get = real_get  # type: ignore[method-assign]
    with session_scope(engine) as s:
        assert moderate_images(s, blobs, scorer, on_s3).errors == []


DISK_FULL_SCRIPT = """
set -e
mount -t tmpfs -o size=1m tmpfs "$BLOBS"
head -c 944k /dev/zero > "$BLOBS/filler"
{doohable} ingest "$IN" --json > "$OUT/full.json" || echo "exit $?" > "$OUT/full.rc"
find "$BLOBS" -type f ! -name filler > "$OUT/full.files"
rm "$BLOBS/filler"
{doohable} ingest "$IN" --json > "$OUT/freed.json"
find "$BLOBS" -type f > "$OUT/freed.files"
"""


def test_local_blobs_on_a_full_disk(settings: Settings, tmp_path: Path) -> None:
    blobs_dir = settings.home / "blobs"
    blobs_dir.mkdir(parents=True)
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(5):
        (folder / f"{k}.jpg").write_bytes(noise_jpeg(200 + k))  # about 31 kB each: two fit in the 80 kB left
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "BLOBS": str(blobs_dir), "IN": str(folder), "OUT": str(out)}
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here for a small tmpfs: {probe.stderr.strip()}")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", DISK_FULL_SCRIPT.format(doohable=DOOHABLE)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    full = json.loads((out / "full.json").read_text())
    assert not (out / "full.rc").exists(), "a full disk must not stop the run"
    assert 1 <= full["added"] < 5 and len(full["rejected"]) == 5 - full["added"], full
    assert all("disk full" in r["error"] for r in full["rejected"]), full["rejected"]
    freed = json.loads((out / "freed.json").read_text())
    assert (freed["added"], freed["duplicates"], freed["rejected"]) == (5 - full["added"], full["added"], [])
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        shas = set(s.scalars(select(Image.sha256)))
    assert len(shas) == 5
    for name, n in (("full.files", full["added"]), ("freed.files", 5)):
        files = [Path(p) for p in (out / name).read_text().split()]
        assert not [p for p in files if p.name.startswith(".tmp-")], f"half-written files: {files}"
        assert len(files) == n and {p.name for p in files} <= shas  # no orphan, no row without bytes


def test_upload_while_s3_is_down_answers_503(settings: Settings, moto: tuple[Moto, str]) -> None:
    from fastapi.testclient import TestClient

    from doohable.api.app import create_app
    from doohable.store.users import add_user

    server, url = moto
    on_s3 = settings.model_copy(update={"blob_url": url})
    with session_scope(get_engine(on_s3.resolved_database_url)) as s:
        _, token = add_user(s, "up", "voter")
    server.stop()
    with TestClient(create_app(on_s3), raise_server_exceptions=False) as c:
        r = c.post("/api/v1/images", files={"file": ("a.jpg", noise_jpeg(7, 48), "image/jpeg")},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert "unreachable" in r.json()["detail"]
    with session_scope(get_engine(on_s3.resolved_database_url)) as s:
        assert s.scalars(select(Image)).first() is None  # no row without its bytes
