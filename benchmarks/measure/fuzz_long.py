"""Long fuzz runs: the atheris harnesses in fuzz/ for a fixed time each, then schemathesis
with many random examples per API operation. Prints, per harness, the executions, the
executions per second, the coverage units found, the peak memory and the crashes, after a
baseline run of the CI's size (what ``tests/test_fuzz_harnesses.py`` runs) in the same call.

    .venv/bin/python benchmarks/measure/fuzz_long.py                               # 600 s + 300 s + API
    .venv/bin/python benchmarks/measure/fuzz_long.py --images-s 60 --votes-s 60 --api-examples 0

Crash inputs, if any, are kept in ``--out`` (default: a temporary folder, printed)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CI_RUNS = {"fuzz_images.py": 4000, "fuzz_votes.py": 800}  # as in tests/test_fuzz_harnesses.py


def fuzz(harness: str, out: Path, *limits: str) -> dict[str, Any]:
    """Run one harness with libFuzzer ``limits``; return its statistics."""
    work = out / f"{harness.removesuffix('.py')}-{int(time.time())}"
    work.mkdir(parents=True)
    env = {**os.environ, "DOOHABLE_HOME": str(work / "home")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / harness), *limits, "-print_final_stats=1", "-max_len=4096",
         "-rss_limit_mb=2048", f"-artifact_prefix={work}/"],
        capture_output=True, text=True, env=env, cwd=work, check=False,
    )
    text = proc.stdout + proc.stderr

    def stat(name: str) -> int:
        found = re.search(rf"stat::{name}:\s+(\d+)", text)
        return int(found.group(1)) if found else -1

    kinds = ("crash-", "oom-", "timeout-", "leak-")
    crashes = sorted(p.name for p in work.glob("*") if p.name.startswith(kinds))
    return {
        "harness": harness,
        "limit": " ".join(limits),
        "seconds": round(time.monotonic() - started, 1),
        "executions": stat("number_of_executed_units"),
        "exec_per_s": stat("average_exec_per_sec"),
        "new_units": stat("new_units_added"),
        "peak_rss_mb": stat("peak_rss_mb"),
        "exit_code": proc.returncode,
        "crashes": crashes,
        "tail": text[-1500:] if proc.returncode else "",
    }


def api_fuzz(examples: int) -> dict[str, Any]:
    """tests/test_api_fuzz.py with ``examples`` random examples per operation."""
    env = {**os.environ, "DOOHABLE_API_FUZZ_EXAMPLES": str(examples), "DOOHABLE_API_FUZZ_RANDOM": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_api_fuzz.py"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"examples_per_operation": examples, "seconds": round(time.monotonic() - started, 1),
            "exit_code": proc.returncode, "summary": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images-s", type=int, default=600, help="seconds of fuzz_images.py")
    ap.add_argument("--votes-s", type=int, default=300, help="seconds of fuzz_votes.py")
    ap.add_argument("--api-examples", type=int, default=300, help="schemathesis examples/operation (0: skip)")
    ap.add_argument("--out", type=Path, default=None, help="folder for crash inputs and work files")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="doohable-fuzz-long-"))
    load_before = os.getloadavg()[0]
    results = []
    for harness, seconds in (("fuzz_images.py", args.images_s), ("fuzz_votes.py", args.votes_s)):
        results.append({"baseline (CI size)": fuzz(harness, out, f"-runs={CI_RUNS[harness]}"),
                        "long": fuzz(harness, out, f"-max_total_time={seconds}")})
    api = api_fuzz(args.api_examples) if args.api_examples else None
    report = {"machine": f"{os.cpu_count()} cores, load average {load_before:.1f} before, "
                         f"{os.getloadavg()[0]:.1f} after", "work": str(out), "atheris": results, "api": api}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"machine: {report['machine']}; work files: {out}")
    for pair in results:
        for label, r in pair.items():
            print(f"{r['harness']:15s} {label:18s} {r['limit']:22s} {r['executions']:>9,} executions "
                  f"({r['exec_per_s']}/s) in {r['seconds']} s, {r['new_units']} new coverage units, "
                  f"peak RSS {r['peak_rss_mb']} MB, exit {r['exit_code']}, crashes: {len(r['crashes'])}")
            if r["tail"]:
                print(r["tail"])
    if api:
        print(f"schemathesis: {api['examples_per_operation']} random examples per operation, "
              f"{api['seconds']} s, exit {api['exit_code']}: {api['summary']}")


if __name__ == "__main__":
    main()
