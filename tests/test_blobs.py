"""doohable.store.blobs: local folder and a REAL S3-compatible server (moto's server mode)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skd

from doohable.config import Settings
from doohable.ingest import ingest_inputs
from doohable.store.blobs import BlobStore, LocalBlobStore, S3BlobStore, blob_key, open_blobs
from samples import encode


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a real HTTP server, not an in-process mock)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """An empty bucket on the moto server, reached through the usual AWS variables."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"b-{abs(hash(request.node.nodeid)) % 10**9}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/images"


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return open_blobs(f"file://{tmp_path / 'blobs'}")
    return open_blobs(request.getfixturevalue("s3_url"))


def test_put_get_exists_delete(store: BlobStore) -> None:
    data = b"\xff\xd8 some image bytes"
    key = sha(data)
    assert not store.exists(key)
    with pytest.raises(KeyError):
        store.get(key)
    store.put(key, data)
    store.put(key, data)  # idempotent
    assert store.exists(key)
    assert store.get(key) == data
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting a missing blob is fine


def test_keys_must_be_sha256(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "ABC", "a" * 63, "A" * 64):
        with pytest.raises(ValueError, match="SHA-256"):
            store.put(bad, b"x")


def test_local_layout_is_fanned_out_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(1000)
    key = sha(data)
    store.put(key, data)
    assert (tmp_path / key[:2] / key[2:4] / key).read_bytes() == data
    assert blob_key(key) == f"{key[:2]}/{key[2:4]}/{key}"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [key]


def test_local_write_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    key = sha(b"abc")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(key, b"abc")
    assert not store.exists(key)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the temporary file is gone too


def test_s3_objects_live_under_the_prefix(s3_url: str, s3_endpoint: str) -> None:
    import boto3

    store = open_blobs(s3_url)
    assert isinstance(store, S3BlobStore)
    data = b"bytes on s3"
    store.put(sha(data), data)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=store.bucket)["Contents"]]
    k = sha(data)
    assert keys == [f"images/{k[:2]}/{k[2:4]}/{k}"]


def test_open_blobs_urls(tmp_path: Path) -> None:
    local = open_blobs(f"file://{tmp_path}")
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path
    with pytest.raises(ValueError, match="unsupported blob URL"):
        open_blobs("ftp://host/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        S3BlobStore("", client=object())


@pytest.mark.slow
def test_ingest_onto_s3_is_atomic(
    settings: Settings, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole ingest path with blobs on the S3 server: stored, de-duplicated, and no orphan
    object when the row insert fails."""
    import doohable.ingest.store as ingest_store

    jpeg, png = (encode(Image.fromarray(a), f) for a, f in ((skd.astronaut(), "JPEG"), (skd.coffee(), "PNG")))
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    on_s3 = settings.model_copy(update={"blob_url": s3_url})
    report = ingest_inputs([str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg")], on_s3)
    assert (report.added, report.duplicates, report.rejected) == (1, 1, [])
    store = open_blobs(s3_url)
    assert store.get(sha(jpeg)) == jpeg

    def fail(*_: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest_store, "_insert_image", fail)
    failed = ingest_inputs([str(tmp_path / "b.png")], on_s3)
    assert failed.added == 0 and "database went away" in failed.rejected[0]["error"]
    assert not store.exists(sha(png))
    assert store.exists(sha(jpeg))
