"""Voting throughput over HTTP: votes per second and latency of next-pair + vote.

Real ``doohable serve`` processes, httpx clients in threads; every vote is a
``GET /api/v1/pairs/next`` then a ``POST /api/v1/votes``. Afterwards the database must hold
exactly the votes the clients were told were stored (0 lost) and the Elo table must equal a
replay of the log. Baseline, same run, same clients: two ``GET /healthz`` per "vote" (the
cost of HTTP alone on this machine). With ``--before REV`` every configuration is also run,
in the same run and right before, with the servers of git revision REV (``git archive`` of
its ``src/`` on the servers' PYTHONPATH), so that before/after compare under the same load.

    .venv/bin/python benchmarks/measure/bench_votes.py [--clients 8] [--votes 150] [--images 300] \
        [--before REV] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from doohable import voting  # noqa: E402
from doohable.store.db import dispose_all, get_engine, session_scope  # noqa: E402
from doohable.store.models import Rating, Vote  # noqa: E402
from doohable.store.users import add_user  # noqa: E402
from server_support import start_server, stop_server  # noqa: E402
from voting_support import add_images  # noqa: E402

PG_URL = os.environ.get("DOOHABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid in pids or ppid in pids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_clients(urls: list[str], tokens: list[str], n: int, one: Callable[[httpx.Client], None]
                ) -> tuple[float, np.ndarray]:
    """Each client thread calls ``one`` n times; return wall seconds and per-call latencies (ms)."""
    lat: list[list[float]] = [[] for _ in tokens]
    errors: list[str] = []

    def work(k: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[k]}"}
        with httpx.Client(base_url=urls[k % len(urls)], headers=headers, timeout=60.0) as c:
            for _ in range(n):
                t0 = time.perf_counter()
                try:
                    one(c)
                except Exception as e:
                    errors.append(repr(e))
                    return
                lat[k].append((time.perf_counter() - t0) * 1000.0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(tokens))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client errors, first: {errors[0]}")
    return wall, np.array([x for xs in lat for x in xs])


def vote_once(c: httpx.Client) -> None:
    pair = c.get("/api/v1/pairs/next").raise_for_status().json()
    r = c.post("/api/v1/votes", json={"pair_token": pair["pair_token"], "winner_id": pair["left"]["id"]})
    if r.status_code != 201:
        raise RuntimeError(f"vote refused: {r.status_code} {r.text}")


def health_twice(c: httpx.Client) -> None:
    c.get("/healthz").raise_for_status()
    c.get("/healthz").raise_for_status()


def source_tree(rev: str, tmp: Path) -> str:
    """Extract ``src/`` of git revision ``rev`` under ``tmp``; return the folder to put on PYTHONPATH."""
    dest = tmp / f"src-{rev.replace('/', '_')}"
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest / "src")


def load() -> str:
    """The 1-minute load average (other jobs on this machine inflate every figure)."""
    return f"{os.getloadavg()[0]:.1f}"


def bench(backend: str, workers: int, servers: int, args: argparse.Namespace, tmp: Path,
          pythonpath: str | None = None) -> dict[str, float]:
    home = tmp / f"{backend}-{workers}-{servers}-{'before' if pythonpath else 'now'}"
    home.mkdir(parents=True, exist_ok=True)
    schema = None
    if backend == "sqlite":
        db_url = f"sqlite:///{home / 'doohable.db'}"
    else:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db_url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    env = {"DOOHABLE_HOME": str(home), "DOOHABLE_DATABASE_URL": db_url, "DOOHABLE_BLOB_URL": f"file://{home}/b"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        add_images(s, args.images)
        tokens = [add_user(s, f"bench{k}")[1] for k in range(args.clients)]
    procs = []
    try:
        for k in range(servers):
            extra = ["--workers", str(workers)] if workers > 1 else []
            procs.append(start_server(home / f"server{k}.log", env, extra_args=extra))
        urls = [u for _p, u in procs]
        run_clients(urls, tokens, 5, vote_once)  # warm-up: schema, scheduler state, connections
        pids = [p.pid for p, _u in procs]
        cpu0 = cpu_seconds(pids)
        base_wall, base_lat = run_clients(urls, tokens, args.votes, health_twice)
        base_cpu_ms = (cpu_seconds(pids) - cpu0) * 1000.0 / max(len(base_lat), 1)
        cpu0 = cpu_seconds(pids)
        wall, lat = run_clients(urls, tokens, args.votes, vote_once)
        cpu_ms = (cpu_seconds(pids) - cpu0) * 1000.0 / max(len(lat), 1)
    finally:
        for p, _u in procs:
            stop_server(p)
    sent = len(tokens) * (args.votes + 5)
    with session_scope(engine) as s:
        stored = int(s.scalar(select(func.count()).select_from(Vote)) or 0)
        elo = select(Rating.image_id, Rating.rating).where(Rating.method == "elo")
        table = {i: r for i, r in s.execute(elo)}
        replay = voting.replay_elo(voting.log_rows(s)).ratings
    dispose_all()
    if schema:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    n = len(lat)
    return {
        "votes_per_s": n / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "baseline_per_s": len(base_lat) / base_wall, "baseline_p99_ms": float(np.percentile(base_lat, 99)),
        "lost": sent - stored, "replay_equal": float(table == replay), "server_cpu_ms": cpu_ms,
        "baseline_cpu_ms": base_cpu_ms,
    }


BREAKDOWN_STEPS: dict[str, Callable[[httpx.Client], object]] = {
    "GET /healthz (no auth, no database)": lambda c: c.get("/healthz"),
    "GET /api/v1/votes/stats (bearer auth + two counts)": lambda c: c.get("/api/v1/votes/stats"),
    "GET /api/v1/pairs/next": lambda c: c.get("/api/v1/pairs/next"),
    "next pair + vote": vote_once,
}


def breakdown(args: argparse.Namespace, tmp: Path, pythonpath: str | None, rounds: int = 3
              ) -> dict[str, float]:
    """Server CPU ms per request, one client, SQLite (the least of ``rounds`` rounds, after
    ``args.images`` warm-up votes): where a vote's CPU goes."""
    home = tmp / f"breakdown-{'before' if pythonpath else 'now'}"
    home.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{home / 'doohable.db'}"
    env = {"DOOHABLE_HOME": str(home), "DOOHABLE_DATABASE_URL": db_url, "DOOHABLE_BLOB_URL": f"file://{home}/b"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with session_scope(get_engine(db_url)) as s:
        add_images(s, args.images)
        token = add_user(s, "breakdown")[1]
    proc, url = start_server(home / "server.log", env)
    best: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0) as c:
            for _ in range(args.images):
                vote_once(c)
            for _ in range(rounds):
                for label, step in BREAKDOWN_STEPS.items():
                    cpu0 = cpu_seconds([proc.pid])
                    for _ in range(args.votes):
                        step(c)
                    cpu_ms = (cpu_seconds([proc.pid]) - cpu0) * 1000.0 / args.votes
                    best[label] = min(best.get(label, cpu_ms), cpu_ms)
    finally:
        stop_server(proc)
    dispose_all()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--votes", type=int, default=150, help="votes per client")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--workdir", type=Path, default=None, help="keep databases and server logs here")
    ap.add_argument("--breakdown", action="store_true", help="also: server CPU per kind of request")
    ap.add_argument("--before", metavar="REV", default=None,
                    help="also run every configuration with the servers of this git revision")
    args = ap.parse_args()
    print(f"{args.clients} clients x {args.votes} votes, {args.images} images; one vote = next pair + vote")
    print("| code | database | servers x workers | votes/s | p50 ms | p99 ms | server CPU ms/vote | "
          "baseline: 2x /healthz per s | baseline p99 ms | baseline server CPU ms | lost | Elo = replay | "
          "load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    configs = {"sqlite": [(1, 1), (2, 1)], "postgres": [(1, 1), (1, 2)]}  # (workers, servers)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        trees: list[tuple[str, str | None]] = [("now", None)]
        if args.before:
            trees.insert(0, (f"before ({args.before})", source_tree(args.before, work)))
        for backend in args.backends.split(","):
            for workers, servers in configs[backend]:
                for label, pythonpath in trees:
                    r = bench(backend, workers, servers, args, work, pythonpath)
                    print(f"| {label} | {backend} | {servers} x {workers} | {r['votes_per_s']:.0f} | "
                          f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_ms']:.1f} | "
                          f"{r['baseline_per_s']:.0f} | {r['baseline_p99_ms']:.1f} | "
                          f"{r['baseline_cpu_ms']:.1f} | "
                          f"{r['lost']} | {'yes' if r['replay_equal'] else 'NO'} | {load()} |", flush=True)
        if args.breakdown:
            results = {label: breakdown(args, work, pythonpath) for label, pythonpath in trees}
            print(f"\nServer CPU ms per request, one client, SQLite, least of 3 rounds (load {load()}):")
            print("| request | " + " | ".join(results) + " |")
            print("|---|" + "---|" * len(results))
            for step in BREAKDOWN_STEPS:
                print(f"| {step} | " + " | ".join(f"{r[step]:.2f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
