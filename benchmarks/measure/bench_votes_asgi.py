"""Server CPU per next-pair + vote without an HTTP server: the app called in-process as ASGI.

Load-independent enough to compare small changes on a shared machine (uvicorn's own share
is left out; ``bench_votes.py`` measures over HTTP). SQLite, one voter, ``--images`` images
and as many warm-up votes; then the least of ``--rounds`` rounds of ``--n`` requests of each
kind, in CPU ms (``time.process_time``: every thread of the process). With ``--before REV``
the same measurement runs first, in a child process, on ``git archive REV src`` (baseline,
same run).

    .venv/bin/python benchmarks/measure/bench_votes_asgi.py [--n 150] [--rounds 10] [--before REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def measure(n: int, rounds: int, images: int) -> dict[str, float]:
    """CPU ms per request kind (least of ``rounds``) in a fresh home; run in this process."""
    sys.path.insert(0, str(ROOT / "tests"))
    home = Path(tempfile.mkdtemp(prefix="bench-asgi-"))
    os.environ.update({"DOOHABLE_HOME": str(home), "DOOHABLE_DATABASE_URL": f"sqlite:///{home / 'd.db'}",
                       "DOOHABLE_BLOB_URL": f"file://{home}/b"})
    from doohable.api.app import create_app
    from doohable.config import get_settings
    from doohable.store.db import get_engine, session_scope
    from doohable.store.users import add_user
    from voting_support import add_images

    settings = get_settings()
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        add_images(s, images)
        token = add_user(s, "bench")[1]
    app = create_app(settings)
    base = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"*/*"), (b"user-agent", b"python-httpx/0.28")]

    async def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = list(base)
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "path": path, "raw_path": path.encode(), "root_path": "", "scheme": "http",
            "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000), "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        out: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        await app(scope, receive, send)
        body_out = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
        return out[0]["status"], body_out

    async def vote() -> None:
        status, raw = await call("GET", "/api/v1/pairs/next")
        pair = json.loads(raw)
        body = json.dumps({"pair_token": pair["pair_token"], "winner_id": pair["left"]["id"]}).encode()
        status, raw = await call("POST", "/api/v1/votes", body)
        if status != 201:
            raise RuntimeError(f"vote answered {status}: {raw!r}")

    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "GET /healthz": lambda: call("GET", "/healthz"),
        "GET /api/v1/pairs/next": lambda: call("GET", "/api/v1/pairs/next"),
        "next pair + vote": vote,
    }

    async def run() -> dict[str, float]:
        for _ in range(images):
            await vote()
        best: dict[str, float] = {}
        for _ in range(rounds):
            for label, step in steps.items():
                t0 = time.process_time()
                for _ in range(n):
                    await step()
                best[label] = min(best.get(label, 1e9), (time.process_time() - t0) * 1000.0 / n)
        return best

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150, help="requests per round and kind")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--before", metavar="REV", default=None)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args.n, args.rounds, args.images)))
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            child = subprocess.run(
                [sys.executable, __file__, "--json", "--n", str(args.n), "--rounds", str(args.rounds),
                 "--images", str(args.images)],
                env={**os.environ, "PYTHONPATH": str(Path(tmp) / "src")},
                check=True, capture_output=True, text=True,
            )
            results[f"before ({args.before})"] = json.loads(child.stdout.strip().splitlines()[-1])
        results["now"] = measure(args.n, args.rounds, args.images)
    print(f"server CPU ms per request, in-process ASGI, SQLite, least of {args.rounds} x {args.n}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| request | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for step in results["now"]:
        print(f"| {step} | " + " | ".join(f"{r[step]:.3f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
