"""The hostile corpus (:mod:`hostile`) through every entry point: CLI ingest, batch scoring,
the upload API, the score API and URL ingest (a real ``doohable serve`` process).

Good files must be accepted, hostile ones refused with a clear reason; the server's memory
(RSS, sampled during the whole run) must never grow by as much as the 100 MB upload, and the
server must answer /healthz and accept a good file afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from hostile import Case, corpus, huge_upload, write_corpus
from scoring_fixtures import brightness_model
from server_support import start_server, stop_server

pytestmark = pytest.mark.slow

BYTE_LIMIT = 2_000_000  # small, so that "just above the limit" stays cheap
HUGE = "huge-100mb.jpg"
MAX_RSS_GROWTH = 100 * 1024 * 1024  # less than the 100 MB upload: it is never held whole


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return corpus(BYTE_LIMIT)


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory: pytest.TempPathFactory, cases: list[Case]) -> dict[str, Any]:
    """The corpus and the 100 MB file on disk, and the environment of a fresh SQLite store."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "corpus"
    write_corpus(folder, cases)
    huge_upload(folder / HUGE)
    home = root / "home"
    env = {
        "DOOHABLE_HOME": str(home),
        "DOOHABLE_DATABASE_URL": f"sqlite:///{home / 'doohable.db'}",
        "DOOHABLE_BLOB_URL": f"file://{home / 'blobs'}",
        "DOOHABLE_MAX_IMAGE_BYTES": str(BYTE_LIMIT),
        "DOOHABLE_MODEL": str(brightness_model(root / "brightness.onnx")),
        "DOOHABLE_URL_ALLOW_PRIVATE": "true",  # the test's file server is on loopback
        "DOOHABLE_THREADS": "1",
    }
    return {"folder": folder, "env": env, "root": root}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("doohable")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=600, check=False
    )


def _check_refusal(case: Case, code: int, detail: str) -> None:
    assert 400 <= code < 500, (case.name, code, detail)
    assert case.reason_ok(detail), (case.name, detail)


def test_corpus_has_every_kind_the_issue_names(cases: list[Case]) -> None:
    assert len(cases) >= 40
    names = " ".join(c.name for c in cases)
    for kind in ("truncated.jpg", "truncated.png", "truncated.webp", "truncated.gif", "empty", "bomb.png",
                 "gif-bomb", "webp-bomb", "declares", "named", "plus-zip", "svg-with-script", "html", "pdf",
                 "cmyk", "16bit", "animated.gif", "animated.webp", "corrupt-exif", "huge-exif", "one-pixel"):
        assert kind in names, kind
    assert all(c.accept or c.reason for c in cases)


def test_cli_ingest(hostile_corpus: dict[str, Any], cases: list[Case]) -> None:
    r = _cli(hostile_corpus["env"], "ingest", str(hostile_corpus["folder"]), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    good = [c for c in cases if c.accept]
    assert out["added"] + out["duplicates"] == len(good)
    reasons = {Path(x["source"]).name: x["error"] for x in out["rejected"]}
    assert sorted(reasons) == sorted([c.name for c in cases if not c.accept] + [HUGE])
    for c in cases:
        if not c.accept:
            assert c.reason_ok(reasons[c.name]), (c.name, reasons[c.name])
    assert "limit" in reasons[HUGE]


def test_batch_scoring(hostile_corpus: dict[str, Any], cases: list[Case]) -> None:
    paths = [str(hostile_corpus["folder"] / c.name) for c in cases] + [str(hostile_corpus["folder"] / HUGE)]
    r = _cli(hostile_corpus["env"], "score", *paths, "--json", "--no-store", "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {Path(d["path"]).name: d for d in map(json.loads, r.stdout.splitlines())}
    assert len(lines) == len(cases) + 1
    for c in cases:
        line = lines[c.name]
        if c.accept:
            assert 1.0 <= line.get("score", 0) <= 5.0, (c.name, line)
        else:
            assert "score" not in line and c.reason_ok(line["error"]), (c.name, line)
    assert "limit" in lines[HUGE]["error"]


# ---------------------------------------------------------------- through the server


class RssSampler:
    """Samples a process's resident memory every 20 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.now())
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _file_server(folder: Path) -> ThreadingHTTPServer:
    """Serves ``folder`` on loopback, every file as ``image/jpeg`` (so the decoder decides)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = folder / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client stopped reading (too large): fine
                        return

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(hostile_corpus: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``doohable serve`` on the corpus' store, warmed up (models loaded), with a voter token
    and the local file server for URL ingest."""
    env = hostile_corpus["env"]
    r = _cli(env, "users", "add", "hostile-voter", "--role", "voter", "--json")
    assert r.returncode == 0, r.stderr
    auth = {"Authorization": f"Bearer {json.loads(r.stdout)['token']}"}
    proc, url = start_server(hostile_corpus["root"] / "serve.log", env=env)
    files = _file_server(hostile_corpus["folder"])
    files_url = f"http://127.0.0.1:{files.server_address[1]}"
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
            warm = (hostile_corpus["folder"] / "astronaut.jpg").read_bytes()
            assert client.post("/api/v1/images", files={"file": ("w.jpg", warm)}).status_code == 201
            assert client.post("/api/v1/score", files={"file": ("w.jpg", warm)}).status_code == 200
            r2 = client.post("/api/v1/images/url", json={"url": f"{files_url}/chelsea.png"})
            assert r2.status_code == 201, r2.text
            yield {"client": client, "proc": proc, "files_url": files_url, "folder": hostile_corpus["folder"]}
    finally:
        files.shutdown()
        stop_server(proc)


def _healthy_after(server: dict[str, Any], sampler: RssSampler, base: int) -> None:
    peak = sampler.stop()
    client: httpx.Client = server["client"]
    assert server["proc"].poll() is None, "the server died"
    assert client.get("/healthz").status_code == 200
    good = (server["folder"] / "coins-rotated.jpg").read_bytes()
    assert client.post("/api/v1/score", files={"file": ("ok.jpg", good)}).status_code == 200
    print(f"server RSS: {base / 2**20:.0f} MiB before, peak growth {(peak - base) / 2**20:.1f} MiB")
    assert peak - base < MAX_RSS_GROWTH, f"RSS grew by {(peak - base) / 2**20:.0f} MiB"


def test_upload_api(server: dict[str, Any], cases: list[Case]) -> None:
    client: httpx.Client = server["client"]
    sampler = RssSampler(server["proc"].pid)
    base = sampler.now()
    for c in cases:
        r = client.post("/api/v1/images", files={"file": (c.name, c.data, "image/jpeg")})
        if c.accept:
            assert r.status_code == 201, (c.name, r.text)
            assert set(r.json()) >= {"id", "sha256", "duplicate"}
        else:
            _check_refusal(c, r.status_code, r.json()["detail"])
    with (server["folder"] / HUGE).open("rb") as f:
        r = client.post("/api/v1/images", files={"file": (HUGE, f, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text
    _healthy_after(server, sampler, base)


def test_score_api(server: dict[str, Any], cases: list[Case]) -> None:
    client: httpx.Client = server["client"]
    sampler = RssSampler(server["proc"].pid)
    base = sampler.now()
    for c in cases:
        r = client.post("/api/v1/score", files={"file": (c.name, c.data, "application/octet-stream")})
        if c.accept:
            assert r.status_code == 200, (c.name, r.text)
            assert 1.0 <= r.json()["score"] <= 5.0
        else:
            _check_refusal(c, r.status_code, r.json()["detail"])
    with (server["folder"] / HUGE).open("rb") as f:
        r = client.post("/api/v1/score", files={"file": (HUGE, f, "image/jpeg")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text
    _healthy_after(server, sampler, base)


def test_url_ingest(server: dict[str, Any], cases: list[Case]) -> None:
    client: httpx.Client = server["client"]
    sampler = RssSampler(server["proc"].pid)
    base = sampler.now()
    for c in cases:
        r = client.post("/api/v1/images/url", json={"url": f"{server['files_url']}/{c.name}"})
        if c.accept:
            assert r.status_code == 201, (c.name, r.text)
        else:
            _check_refusal(c, r.status_code, r.json()["detail"])
    r = client.post("/api/v1/images/url", json={"url": f"{server['files_url']}/{HUGE}"})
    assert r.status_code == 400 and "limit" in r.json()["detail"], r.text
    _healthy_after(server, sampler, base)


def test_chunked_100mb_upload_is_cut_off(server: dict[str, Any]) -> None:
    """A body without Content-Length (chunked) is cut off once it passes the limit (413),
    never spooled whole to a temporary file."""
    client: httpx.Client = server["client"]
    sampler = RssSampler(server["proc"].pid)
    base = sampler.now()
    boundary = "hostileboundary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        block = b"\xff\xd8" + b"\xa5" * ((1 << 20) - 2)
        for _ in range(100):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/api/v1/images", content=body(), headers=headers)
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text
    _healthy_after(server, sampler, base)
