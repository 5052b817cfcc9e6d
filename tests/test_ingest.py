"""doohable.ingest: de-duplication, atomicity of blob + row, inputs, and SSRF-safe fetching."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from skimage import data as skd
from sqlalchemy import func, select

import doohable.ingest as ingest_mod
import doohable.ingest.store as ingest_store
from doohable.config import Settings
from doohable.images import ImageError
from doohable.ingest import (
    IngestError,
    PhashIndex,
    SourceInfo,
    address_problem,
    fetch_url,
    hamming,
    ingest_bytes,
    ingest_inputs,
    read_list,
)
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image, Source
from samples import encode

ASTRONAUT = encode(PILImage.fromarray(skd.astronaut()), "JPEG", quality=90)
COFFEE = encode(PILImage.fromarray(skd.coffee()), "PNG")


def _count(settings: Settings, model: type) -> int:
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _ingest(settings: Settings, data: bytes, uri: str = "upload") -> ingest_mod.IngestResult:
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return ingest_bytes(s, blobs, data, source=SourceInfo("upload", uri), settings=settings)


def test_exact_duplicate_adds_a_source_not_an_image(settings: Settings) -> None:
    first = _ingest(settings, ASTRONAUT, "a.jpg")
    again = _ingest(settings, ASTRONAUT, "b.jpg")
    assert not first.duplicate and again.duplicate
    assert again.image_id == first.image_id
    assert first.sha256 == hashlib.sha256(ASTRONAUT).hexdigest()
    assert _count(settings, Image) == 1 and _count(settings, Source) == 2
    assert open_blobs(settings.resolved_blob_url).get(first.sha256) == ASTRONAUT
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        img = s.get(Image, first.image_id)
        assert img is not None
        assert (img.width, img.height, img.format, img.size_bytes) == (512, 512, "JPEG", len(ASTRONAUT))
        assert len(img.phash) == 16 and int(img.phash, 16) >= 0


def test_near_duplicate_is_added_and_points_at_the_original(settings: Settings) -> None:
    original = _ingest(settings, ASTRONAUT)
    other = _ingest(settings, COFFEE)
    smaller = encode(PILImage.fromarray(skd.astronaut()).resize((300, 300)), "WEBP", quality=60)
    near = _ingest(settings, smaller)
    assert not near.duplicate and near.image_id not in (original.image_id, other.image_id)
    assert near.near_duplicate_of == original.image_id
    assert other.near_duplicate_of is None
    assert hamming(near.phash, original.phash) <= settings.near_duplicate_distance
    assert hamming(other.phash, original.phash) > settings.near_duplicate_distance


def test_phash_index_nearest() -> None:
    idx = PhashIndex([1, 2], ["0000000000000000", "00000000000000ff"])
    assert idx.nearest("0000000000000007", 6) == 1  # 3 bits from 1, 5 from 2
    assert idx.nearest("000000000000003f", 6) == 2
    assert idx.nearest("ffffffffffffffff", 6) is None
    idx.add(3, "ffffffffffffff00")
    assert idx.nearest("ffffffffffffffff", 8) == 3
    assert PhashIndex().nearest("0000000000000000", 64) is None
    assert hamming("0f", "f0") == 8


def test_bad_image_raises_and_leaves_nothing(settings: Settings) -> None:
    with pytest.raises(ImageError, match="plain text"):
        _ingest(settings, b"just some text, not a photo\n" * 10)
    assert _count(settings, Image) == 0 and _count(settings, Source) == 0


def _blob_files(settings: Settings) -> list[Path]:
    root = Path(settings.resolved_blob_url.removeprefix("file://"))
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_failure_between_blob_and_row_leaves_neither(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = open_blobs(settings.resolved_blob_url)
    sha = hashlib.sha256(ASTRONAUT).hexdigest()
    seen: list[bool] = []

    def fail_after_blob(session: object, image: Image, source: SourceInfo) -> Image:
        seen.append(blobs.exists(sha))  # the blob was written before the rows
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest_store, "_insert_image", fail_after_blob)
    with pytest.raises(RuntimeError, match="database went away"):
        _ingest(settings, ASTRONAUT)
    assert seen == [True]
    assert not blobs.exists(sha) and _blob_files(settings) == []
    assert _count(settings, Image) == 0 and _count(settings, Source) == 0


def test_failure_at_commit_time_removes_the_new_blob(settings: Settings) -> None:
    blobs = open_blobs(settings.resolved_blob_url)
    engine = get_engine(settings.resolved_database_url)
    with pytest.raises(RuntimeError, match="later step"), session_scope(engine) as s:
        ingest_bytes(s, blobs, ASTRONAUT, source=SourceInfo("upload", "x"), settings=settings)
        raise RuntimeError("a later step of the same transaction failed")
    assert _blob_files(settings) == []
    assert _count(settings, Image) == 0


def test_a_blob_that_was_there_before_is_kept_on_failure(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = open_blobs(settings.resolved_blob_url)
    sha = hashlib.sha256(ASTRONAUT).hexdigest()
    blobs.put(sha, ASTRONAUT)  # e.g. restored from a backup; not ours to delete

    def boom(*_: object) -> Image:
        raise RuntimeError("insert failed")

    monkeypatch.setattr(ingest_store, "_insert_image", boom)
    with pytest.raises(RuntimeError):
        _ingest(settings, ASTRONAUT)
    assert blobs.exists(sha)
    assert _count(settings, Image) == 0


def test_inputs_files_folders_lists_and_bad_inputs(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(ASTRONAUT)
    (folder / "sub" / "b.png").write_bytes(COFFEE)
    (folder / ".hidden.jpg").write_bytes(b"ignored")
    rocket = tmp_path / "rocket.bmp"
    rocket.write_bytes(encode(PILImage.fromarray(skd.rocket()), "BMP"))
    chelsea = tmp_path / "chelsea.webp"
    chelsea.write_bytes(encode(PILImage.fromarray(skd.chelsea()), "WEBP"))
    (tmp_path / "list.txt").write_text("# my list\nrocket.bmp\n\nmissing.jpg\nftp://example.com/x.jpg\n")
    (tmp_path / "list.csv").write_text(f"author,path\nme,{chelsea}\nyou,{rocket}\n")
    progress: list[tuple[int, int]] = []
    report = ingest_inputs(
        [str(folder), str(tmp_path / "list.txt"), str(tmp_path / "list.csv"), str(tmp_path / "nope")],
        settings,
        on_progress=lambda done, total, _src: progress.append((done, total)),
    )
    assert (report.added, report.duplicates, report.near_duplicates) == (4, 1, 0)
    errors = {r["source"]: r["error"] for r in report.rejected}
    assert errors == {
        str(tmp_path / "missing.jpg"): "no such file or folder",
        "ftp://example.com/x.jpg": "only http and https URLs can be fetched",
        str(tmp_path / "nope"): "no such file or folder",
    }
    assert progress[-1] == (5, 5) and len(progress) == 5
    assert _count(settings, Source) == 5


def test_read_list_csv_first_column_and_url_column(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("x.jpg,caption one\nhttp://example.com/y.jpg,two\n")
    assert read_list(plain) == [str(tmp_path / "x.jpg"), "http://example.com/y.jpg"]
    named = tmp_path / "named.csv"
    named.write_text("id,URL\n1,https://example.com/a.png\n2,/abs/b.png\n")
    assert read_list(named) == ["https://example.com/a.png", "/abs/b.png"]


def test_a_list_that_cannot_be_read_is_rejected(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "binary.txt"
    bad.write_bytes(b"\xff\xfe\xfa" * 10)
    report = ingest_inputs([str(bad)], settings)
    assert report.added == 0 and report.rejected[0]["source"] == str(bad)
    assert "cannot read the list" in report.rejected[0]["error"]


# --- URL fetching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "private_ok", "problem"),
    [
        ("127.0.0.1", False, "loopback"),
        ("::1", False, "loopback"),
        ("10.1.2.3", False, "private"),
        ("192.168.0.10", False, "private"),
        ("172.16.5.5", False, "private"),
        ("169.254.169.254", False, "metadata"),
        ("169.254.169.254", True, "metadata"),
        ("fd00:ec2::254", True, "metadata"),
        ("169.254.1.1", True, "link-local"),
        ("fe80::1", False, "link-local"),
        ("224.0.0.1", False, "multicast"),
        ("0.0.0.0", False, "unspecified"),
        ("100.64.0.1", False, "non-public"),
        ("240.0.0.1", True, "reserved"),
        ("::ffff:127.0.0.1", False, "loopback"),
        ("fc00::1", False, "private"),
    ],
)
def test_forbidden_addresses(address: str, private_ok: bool, problem: str) -> None:
    import ipaddress

    found = address_problem(ipaddress.ip_address(address), private_ok)
    assert found is not None and problem in found


def test_public_addresses_and_allowed_loopback() -> None:
    import ipaddress

    assert address_problem(ipaddress.ip_address("93.184.215.14"), False) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111"), False) is None
    assert address_problem(ipaddress.ip_address("127.0.0.1"), True) is None


@pytest.fixture
def url_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, url_timeout_s=5.0, max_image_bytes=2_000_000)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/x.jpg", "127.0.0.1, a loopback address"),
        ("http://localhost:8080/x.jpg", "a loopback address"),
        ("http://[::1]/x.jpg", "loopback"),
        ("http://10.0.0.5/x.jpg", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address"),
        ("http://2130706433/x.jpg", "loopback"),  # 127.0.0.1 written as one number
        ("http://0x7f.1/x.jpg", "loopback"),
        ("ftp://example.com/x.jpg", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_fetch_refuses_before_connecting(url: str, reason: str, url_settings: Settings) -> None:
    with pytest.raises(IngestError, match=re.escape(reason)):
        fetch_url(url, url_settings)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, headers, body = self.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"nope"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, str], bytes]]]]:
    """A real HTTP server on loopback; tests fill in its routes."""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    handler = type("H", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def test_fetch_from_a_real_server(server: tuple[str, dict], url_settings: Settings) -> None:
    base, routes = server
    routes["/a.jpg"] = (200, {"Content-Type": "image/jpeg"}, ASTRONAUT)
    routes["/go"] = (302, {"Location": "/a.jpg"}, b"")
    with pytest.raises(IngestError, match="loopback"):
        fetch_url(f"{base}/a.jpg", url_settings)  # loopback is refused by default
    allowed = url_settings.model_copy(update={"url_allow_private": True})
    assert fetch_url(f"{base}/a.jpg", allowed) == ASTRONAUT
    assert fetch_url(f"{base}/go", allowed) == ASTRONAUT


def test_fetch_refusals_from_a_real_server(server: tuple[str, dict], url_settings: Settings) -> None:
    base, routes = server
    allowed = url_settings.model_copy(update={"url_allow_private": True, "max_image_bytes": 1000})
    routes["/page"] = (200, {"Content-Type": "text/html"}, b"<html></html>")
    routes["/svg"] = (200, {"Content-Type": "image/svg+xml"}, b"<svg/>")
    routes["/big"] = (200, {"Content-Type": "image/jpeg"}, ASTRONAUT)
    routes["/gone"] = (404, {"Content-Type": "text/plain"}, b"")
    routes["/meta"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    routes["/loop"] = (302, {"Location": "/loop"}, b"")
    expected = {
        "/page": "content type 'text/html'",
        "/svg": "content type 'image/svg+xml'",
        "/big": "above the 1,000-byte limit",
        "/gone": "HTTP 404",
        "/meta": "169.254.169.254, a cloud metadata address",  # checked again after the redirect
        "/loop": "more than 5 redirects",
    }
    for path, reason in expected.items():
        with pytest.raises(IngestError, match=re.escape(reason)):
            fetch_url(f"{base}{path}", allowed)


def test_ingest_urls_end_to_end(settings: Settings, server: tuple[str, dict]) -> None:
    base, routes = server
    routes["/a.jpg"] = (200, {"Content-Type": "image/jpeg"}, ASTRONAUT)
    routes["/b"] = (200, {"Content-Type": "image/png; charset=binary"}, COFFEE)
    routes["/html"] = (200, {"Content-Type": "text/html"}, b"<html></html>")
    allowed = settings.model_copy(update={"url_allow_private": True})
    report = ingest_inputs([f"{base}/a.jpg", f"{base}/b", f"{base}/html", f"{base}/a.jpg"], allowed)
    assert (report.added, report.duplicates) == (2, 1)
    assert [r["source"] for r in report.rejected] == [f"{base}/html"]
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        kinds = {(src.kind, src.uri) for src in s.scalars(select(Source))}
    assert kinds == {("url", f"{base}/a.jpg"), ("url", f"{base}/b")}


def test_a_concurrent_insert_of_the_same_bytes_becomes_a_duplicate(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process stores the same image between our check and our insert: the unique
    SHA-256 refuses our row, and the retry records a duplicate instead of an error."""
    path = tmp_path / "a.jpg"
    path.write_bytes(ASTRONAUT)
    real_insert = ingest_store._insert_image
    calls: list[int] = []

    def racing_insert(session: object, image: Image, source: SourceInfo) -> Image:
        calls.append(1)
        if len(calls) == 1:
            _ingest(settings, ASTRONAUT, "the other process")  # commits in its own transaction
        return real_insert(session, image, source)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_store, "_insert_image", racing_insert)
    report = ingest_inputs([str(path)], settings)
    assert (report.added, report.duplicates, report.rejected) == (0, 1, [])
    assert _count(settings, Image) == 1 and _count(settings, Source) == 2
    assert open_blobs(settings.resolved_blob_url).get(hashlib.sha256(ASTRONAUT).hexdigest()) == ASTRONAUT


def test_fetch_tries_each_checked_address(
    server: tuple[str, dict], url_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name resolving to ::1 first while the server listens on 127.0.0.1 only still works."""
    import socket

    base, routes = server
    routes["/a.jpg"] = (200, {"Content-Type": "image/jpeg"}, ASTRONAUT)
    port = int(base.rsplit(":", 1)[1])
    answers = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    allowed = url_settings.model_copy(update={"url_allow_private": True})
    assert fetch_url(f"http://images.test:{port}/a.jpg", allowed) == ASTRONAUT
    with pytest.raises(IngestError, match=r"images.test resolves to ::1, a loopback address"):
        fetch_url(f"http://images.test:{port}/a.jpg", url_settings)


def test_a_name_with_one_private_answer_is_refused(
    url_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS answers mixing public and private addresses are refused as a whole."""
    import socket

    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(IngestError, match=r"mixed.test resolves to 10\.0\.0\.7, a private address"):
        fetch_url("http://mixed.test/a.jpg", url_settings)
