"""Load test: a real ``doohable serve`` on loopback under locust (headless, as a library).

Each simulated voter has its own token and loops over a mix of the API's hot paths: ask for
a pair and vote on it (6 of 9 iterations; a vote is always on the pair just received), score
an uploaded JPEG (2 of 9) and upload a new image (1 of 9). First a baseline with 1 user
(the same mix, no contention), then ``--users`` users for ``--seconds``; both are printed
with error rate, throughput and p50/p99 latency, together with the machine's load.

    .venv/bin/python benchmarks/measure/load_test.py                       # 16 users, 60 s, SQLite
    .venv/bin/python benchmarks/measure/load_test.py --database-url postgresql://postgres@127.0.0.1:5432/test

The scorer is the bundled default (``--model bundled``), an .onnx path, or ``brightness``: a
tiny ONNX scorer from tests/ that takes no time, so the figures measure the server alone."""

from __future__ import annotations

# locust patches the standard library with gevent: it must be imported first
from locust import HttpUser, between, events, task  # isort: skip
from locust.env import Environment  # isort: skip

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from scoring_fixtures import brightness_model  # noqa: E402
from server_support import start_server, stop_server  # noqa: E402

_seed = itertools.count(1)
TOKENS: list[str] = []


def photo(seed: int, size: int = 160) -> bytes:
    """A distinct small JPEG (blocks of noise: its perceptual hash differs per seed)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Voter(HttpUser):
    """One voter: pairs and votes, scoring and uploads."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {TOKENS.pop()}"
        self.score_jpeg = photo(10_000 + next(_seed))

    @task(6)
    def pair_and_vote(self) -> None:
        r = self.client.get("/api/v1/pairs/next", name="GET /api/v1/pairs/next")
        if r.status_code != 200:
            return
        pair = r.json()
        winner = pair["left"]["id"] if next(_seed) % 2 else pair["right"]["id"]
        body = {"pair_token": pair["pair_token"], "winner_id": winner}
        self.client.post("/api/v1/votes", json=body, name="POST /api/v1/votes")

    @task(2)
    def score(self) -> None:
        self.client.post("/api/v1/score", files={"file": ("s.jpg", self.score_jpeg, "image/jpeg")},
                         name="POST /api/v1/score")

    @task(1)
    def ingest(self) -> None:
        data = photo(1_000_000 + next(_seed))
        files = {"file": ("u.jpg", data, "image/jpeg")}
        self.client.post("/api/v1/images", files=files, name="POST /api/v1/images")


def run_phase(url: str, users: int, seconds: float) -> dict[str, Any]:
    """Run ``users`` voters for ``seconds``; return the totals and the per-route figures."""
    env = Environment(user_classes=[Voter], events=events, host=url)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=max(4, users))
    gevent.spawn_later(seconds, runner.quit)
    started = time.monotonic()
    runner.greenlet.join()
    elapsed = time.monotonic() - started

    def figures(entry: Any) -> dict[str, Any]:
        n = entry.num_requests
        return {
            "requests": n,
            "failures": entry.num_failures,
            "error_rate": entry.num_failures / n if n else 0.0,
            "rps": n / elapsed,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
        }

    routes = {name: figures(entry) for (name, _method), entry in env.stats.entries.items()}
    errors = [f"{e.method} {e.name}: {e.error} ×{e.occurrences}" for e in env.stats.errors.values()]
    return {"users": users, "seconds": round(elapsed, 1), "total": figures(env.stats.total), "routes": routes,
            "errors": errors}


def prepare_store(
    home: Path, database_url: str | None, users: int, images: int, model: str
) -> dict[str, str]:
    """A fresh store with ``images`` images and ``users`` + 1 voter tokens; the server's env."""
    if model == "brightness":
        model = str(brightness_model(home.parent / "brightness.onnx"))
    env = {
        "DOOHABLE_HOME": str(home),
        "DOOHABLE_DATABASE_URL": database_url or f"sqlite:///{home / 'doohable.db'}",
        "DOOHABLE_BLOB_URL": f"file://{home / 'blobs'}",
    }
    if model == "bundled":
        os.environ.pop("DOOHABLE_MODEL", None)  # unset: the bundled default
    else:
        env["DOOHABLE_MODEL"] = model
    exe = str(Path(sys.executable).with_name("doohable"))
    full = {**os.environ, **env}
    folder = home.parent / "seed-images"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(images):
        (folder / f"{k}.jpg").write_bytes(photo(k))
    subprocess.run([exe, "ingest", str(folder), "--json"], env=full, check=True, capture_output=True)
    for k in range(users + 1):
        out = subprocess.run([exe, "users", "add", f"load{k}", "--role", "voter", "--json"], env=full,
                             check=True, capture_output=True, text=True).stdout
        TOKENS.append(json.loads(out)["token"])
    return env


def _pg_schema(url: str, schema: str, create: bool) -> str:
    """Create (or drop) a private schema for the run on the PostgreSQL at ``url``."""
    from sqlalchemy import create_engine, text

    base = url.split("?", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    eng = create_engine(base)
    with eng.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        if create:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    return schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--baseline-seconds", type=float, default=15.0)
    ap.add_argument("--images", type=int, default=200, help="images in the store before the run")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--model", default="bundled", help="bundled (default), brightness, or an .onnx path")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    pg_schema = None
    if args.database_url and "postgresql" in args.database_url:
        pg_schema = _pg_schema(args.database_url, f"load_{os.getpid()}", create=True)
        sep = "&" if "?" in args.database_url else "?"
        args.database_url = f"{args.database_url}{sep}options=-csearch_path%3D{pg_schema}"
    with tempfile.TemporaryDirectory(prefix="doohable-load-") as tmp:
        home = Path(tmp) / "home"
        env = prepare_store(home, args.database_url, args.users, args.images, args.model)
        proc, url = start_server(Path(tmp) / "serve.log", env=env)
        try:
            baseline = run_phase(url, 1, args.baseline_seconds)
            loaded = run_phase(url, args.users, args.seconds)
            healthy = subprocess.run(["curl", "-sf", f"{url}/healthz"], capture_output=True).returncode == 0
        finally:
            stop_server(proc)
            if pg_schema:
                _pg_schema(args.database_url, pg_schema, create=False)
    report = {
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (1 min) at the end",
        "database": "PostgreSQL" if args.database_url else "SQLite",
        "model": args.model,
        "baseline": baseline,
        "load": loaded,
        "healthy_after": healthy,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"machine: {report['machine']}; database: {report['database']}; model: {args.model}; "
          f"healthy after: {healthy}")
    for label, phase in (("baseline", baseline), ("load", loaded)):
        t = phase["total"]
        print(f"{label}: {phase['users']} user(s), {phase['seconds']} s: {t['requests']} requests, "
              f"{t['failures']} errors ({100 * t['error_rate']:.2f} %), {t['rps']:.1f} req/s, "
              f"p50 {t['p50_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms")
        for name, r in sorted(phase["routes"].items()):
            print(f"    {name:28s} {r['requests']:6d} req  {r['rps']:6.1f}/s  p50 {r['p50_ms']:5.0f} ms  "
                  f"p99 {r['p99_ms']:5.0f} ms  errors {r['failures']}")
        for e in phase["errors"]:
            print(f"    error: {e}")


if __name__ == "__main__":
    main()
