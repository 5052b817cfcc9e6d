"""The soak benchmark's short version: a real server under mixed load (voters, a moderator,
the scoring API, an upload every 3 s) for 30 s on each database: no error, every window
served, file descriptors and memory flat after warm-up. The long run's figures are in
docs/benchmarks.md (benchmarks/measure/soak.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import PG_URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "measure"))
from soak import run  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_short_soak_is_flat_and_error_free(database: str, pg_available: bool) -> None:
    if database == "postgres" and not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    result = run(PG_URL if database == "postgres" else None, seconds=30, window_s=5)
    s, windows = result["summary"], result["windows"]
    assert s["errors"] == 0, [w["error_examples"] for w in windows if w["errors"]]
    assert all(w["requests"] > 0 for w in windows), "a window served nothing"
    assert s["fds"][1] <= s["fds"][0] + 5, f"file descriptors grew: {s['fds']}"
    assert s["rss_growth"] <= 0.10, f"memory grew: {s['rss_mib']} MiB"
