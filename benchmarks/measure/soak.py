"""Soak: a real ``doohable serve`` under mixed load for a long time — voters (pair + vote),
a moderator (queue + decisions), the scoring API, and an upload every few seconds — sampled
every window: requests, errors, p50/p99 latency, the server's RSS and open file descriptors,
and the machine's load average (other jobs share the CPU).

The summary compares the last window with the first one after warm-up (RSS growth, file
descriptors, p99) and counts every answer that is not 2xx as an error.

    .venv/bin/python benchmarks/measure/soak.py --seconds 240                       # SQLite
    .venv/bin/python benchmarks/measure/soak.py --seconds 240 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test           # PostgreSQL (own schema)

The scorer is ``brightness`` (a tiny real ONNX scorer from tests/), so that the figures follow
the server and the database, not the model. Prints one JSON document."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from scoring_fixtures import brightness_model  # noqa: E402
from server_support import start_server, stop_server  # noqa: E402


def photo(seed: int, size: int = 128) -> bytes:
    """A distinct small JPEG (blocks of noise: its perceptual hash differs per seed)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@dataclass
class Window:
    """What happened in one sampling window."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Recorder:
    """Latencies and errors of every request, per window (thread-safe)."""

    def __init__(self) -> None:
        self.current = Window()
        self.lock = threading.Lock()

    def timed(self, client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = client.request(method, path, **kw)
        except httpx.HTTPError as e:
            with self.lock:
                self.current.errors.append(f"{method} {path}: {type(e).__name__}")
            return None
        ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            self.current.latencies_ms.append(ms)
            if not 200 <= r.status_code < 300:
                self.current.errors.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
        return r

    def swap(self) -> Window:
        with self.lock:
            done, self.current = self.current, Window()
        return done


def voter(c: httpx.Client, rec: Recorder, rng: random.Random) -> None:
    r = rec.timed(c, "GET", "/api/v1/pairs/next")
    if r is not None and r.status_code == 200:
        p = r.json()
        winner = rng.choice([p["left"]["id"], p["right"]["id"], None])
        rec.timed(c, "POST", "/api/v1/votes", json={"pair_token": p["pair_token"], "winner_id": winner})
    time.sleep(rng.uniform(0.0, 0.1))


def moderator(c: httpx.Client, rec: Recorder, rng: random.Random) -> None:
    r = rec.timed(c, "GET", "/api/v1/moderation/queue", params={"limit": 20, "status": "pending"})
    if r is not None and r.status_code == 200 and r.json():
        image_id = rng.choice(r.json())["id"]
        verdict = rng.choice(["approved", "rejected", "pending"])
        rec.timed(c, "POST", "/api/v1/moderation/decisions", json={"image_id": image_id, "decision": verdict})
    time.sleep(0.3)


def scorer(c: httpx.Client, rec: Recorder, rng: random.Random) -> None:
    data = photo(rng.randrange(1000))
    rec.timed(c, "POST", "/api/v1/score", files={"file": ("s.jpg", data, "image/jpeg")})
    time.sleep(0.3)


def uploader(c: httpx.Client, rec: Recorder, rng: random.Random) -> None:
    data = photo(10_000_000 + rng.randrange(10**9))
    rec.timed(c, "POST", "/api/v1/images", files={"file": ("u.jpg", data, "image/jpeg")})
    time.sleep(3.0)


def _loop(
    url: str, token: str, step: Callable[..., None], rec: Recorder, seed: int, stop: threading.Event
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while not stop.is_set():
            step(c, rec, rng)


def prepare(
    home: Path, database_url: str | None, voters: int, images: int
) -> tuple[dict[str, str], list[str]]:
    """A store with ``images`` images, ``voters`` voters and one moderator; the server's env and
    the tokens (moderator last)."""
    from doohable.config import get_settings
    from doohable.store.blobs import open_blobs
    from doohable.store.db import dispose_all, get_engine, session_scope
    from doohable.store.users import add_user
    from voting_support import add_images

    env = {
        "DOOHABLE_HOME": str(home),
        "DOOHABLE_DATABASE_URL": database_url or f"sqlite:///{home / 'doohable.db'}",
        "DOOHABLE_BLOB_URL": f"file://{home / 'blobs'}",
        "DOOHABLE_MODEL": str(brightness_model(home.parent / "brightness.onnx")),
    }
    os.environ.update(env)
    get_settings.cache_clear()
    s = get_settings()
    with session_scope(get_engine(s.resolved_database_url)) as session:
        add_images(session, images, blobs=open_blobs(s.resolved_blob_url))
        tokens = [add_user(session, f"soak{k}", "voter")[1] for k in range(voters)]
        tokens.append(add_user(session, "soak-mod", "moderator")[1])
    dispose_all()
    return env, tokens


def sample(proc: psutil.Process) -> dict[str, float]:
    """The server's RSS (MiB, with its children) and open file descriptors."""
    procs = [proc, *proc.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in procs) / 2**20
    return {"rss_mib": round(rss, 1), "fds": sum(p.num_fds() for p in procs)}


def _window_figures(w: Window, t: float, proc: psutil.Process) -> dict[str, Any]:
    lat = np.array(w.latencies_ms) if w.latencies_ms else np.array([np.nan])
    p50, p99 = (round(float(np.nanpercentile(lat, q)), 1) for q in (50, 99))
    return {"t_s": round(t), "requests": len(w.latencies_ms), "errors": len(w.errors), "p50_ms": p50,
            "p99_ms": p99, **sample(proc), "load_avg_1min": round(os.getloadavg()[0], 1),
            "error_examples": w.errors[:3]}


def summarise(windows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """First window after warm-up against the last: RSS growth, fds, p99; totals."""
    base, last = windows[min(warmup, len(windows) - 1)], windows[-1]
    return {
        "requests": sum(w["requests"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "rss_mib": [base["rss_mib"], last["rss_mib"]],
        "rss_growth": round(last["rss_mib"] / base["rss_mib"] - 1, 4),
        "fds": [base["fds"], last["fds"]],
        "p99_ms": [base["p99_ms"], last["p99_ms"]],
        "p99_max_ms": max(w["p99_ms"] for w in windows),
        "p50_ms": [base["p50_ms"], last["p50_ms"]],
        "load_avg_1min": [min(w["load_avg_1min"] for w in windows), max(w["load_avg_1min"] for w in windows)],
    }


@contextmanager
def pg_schema(url: str | None) -> Iterator[str | None]:
    """A private schema on the PostgreSQL ``url`` for the run (dropped afterwards)."""
    if url is None:
        yield None
        return
    from sqlalchemy import create_engine, text

    schema = f"soak_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(database_url: str | None, seconds: float, window_s: float = 10.0, voters: int = 4) -> dict[str, Any]:
    """Soak a fresh store for ``seconds``; the per-window figures and the summary."""
    with tempfile.TemporaryDirectory(prefix="doohable-soak-") as tmp, pg_schema(database_url) as db:
        home = Path(tmp) / "home"
        env, tokens = prepare(home, db, voters, images=40)
        proc, url = start_server(Path(tmp) / "serve.log", env=env)
        rec, stop = Recorder(), threading.Event()
        roles: list[tuple[str, Callable[..., None]]] = [(t, voter) for t in tokens[:-1]]
        roles += [(tokens[-1], moderator), (tokens[0], scorer), (tokens[0], uploader)]
        threads = [threading.Thread(target=_loop, args=(url, t, f, rec, k, stop), daemon=True)
                   for k, (t, f) in enumerate(roles)]
        windows: list[dict[str, Any]] = []
        try:
            server, start = psutil.Process(proc.pid), time.monotonic()
            for t in threads:
                t.start()
            while time.monotonic() - start < seconds:
                time.sleep(window_s)
                windows.append(_window_figures(rec.swap(), time.monotonic() - start, server))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
            stop_server(proc)
    kind = "postgresql" if database_url else "sqlite"
    warmup = max(1, len(windows) // 5)
    return {"database": kind, "seconds": seconds, "window_s": window_s, "clients": len(roles),
            "summary": summarise(windows, warmup), "windows": windows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--window", type=float, default=10.0, help="sampling window in seconds")
    ap.add_argument("--voters", type=int, default=4)
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a temp home)")
    args = ap.parse_args()
    print(json.dumps(run(args.database_url, args.seconds, args.window, args.voters), indent=1))


if __name__ == "__main__":
    main()
