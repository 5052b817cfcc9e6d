"""Wall time of `doohable users ...` (which registers only the store commands) against a
command that registers every command module (`doohable images list`), same database, same run.

    PYTHONPATH=src .venv/bin/python benchmarks/measure/bench_cli_startup.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([DOOHABLE, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DOOHABLE_HOME": home, "DOOHABLE_DATABASE_URL": f"sqlite:///{home}/d.db"}
        subprocess.run([DOOHABLE, "init", "--json"], env=env, check=True, capture_output=True)
        cases = {
            "users list (store commands only)": ["users", "list", "--json"],
            "images list (every command module)": ["images", "list", "--json"],
        }
        out = {}
        for name, cmd in cases.items():
            times = [timed(cmd, env) for _ in range(args.runs)]
            runs = [round(t, 2) for t in times]
            out[name] = {"median_s": round(statistics.median(times), 2), "runs_s": runs}
    if args.json:
        print(json.dumps(out))
    else:
        for name, r in out.items():
            print(f"{name}: median {r['median_s']} s over {args.runs} runs {r['runs_s']}")


if __name__ == "__main__":
    main()
