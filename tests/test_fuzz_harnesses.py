"""Short fuzz runs of the atheris harnesses in fuzz/ (each in a subprocess, since
``atheris.Fuzz`` exits the process): zero crashes expected. A control run proves that a
harness reports an unexpected exception instead of swallowing it.

The long runs are ``benchmarks/measure/fuzz_long.py``; their counts are in docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def run_harness(name: str, tmp_path: Path, *args: str, code: str | None = None) -> tuple[int, str]:
    """Run ``fuzz/NAME`` (or ``code`` importing it) with libFuzzer ``args``; return (rc, output)."""
    env = {**os.environ, "DOOHABLE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(FUZZ)}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, str(FUZZ / name)]
    # libFuzzer's rss limit reads ru_maxrss, which Linux carries through fork + exec: a child of
    # this (large) test process would start above the limit. A shell that forks the harness
    # (``; exit``: not exec) makes it a grandchild that starts from the shell's few MB.
    proc = subprocess.run(
        ["sh", "-c", '"$@"; exit $?', "sh",
         *cmd, *args, f"-artifact_prefix={tmp_path}/", "-seed=20261126", "-rss_limit_mb=2048"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(("harness", "runs"), [("fuzz_images.py", 4000), ("fuzz_votes.py", 800)])
def test_short_fuzz_run_finds_no_crash(harness: str, runs: int, tmp_path: Path) -> None:
    rc, out = run_harness(harness, tmp_path, f"-runs={runs}", "-max_len=4096")
    assert rc == 0, out[-4000:]
    assert "Uncaught Python exception" not in out
    done = re.search(r"Done (\d+) runs", out)
    assert done and int(done.group(1)) >= runs, out[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))


def test_a_harness_reports_unexpected_exceptions(tmp_path: Path) -> None:
    code = (
        "import sys, fuzz_images as f\n"
        "def broken(*a, **k):\n"
        "    raise KeyError('not an ImageError')\n"
        "f.images.decode = broken\n"
        "sys.argv = ['fuzz_images'] + sys.argv[1:]\n"
        "f.main()\n"
    )
    rc, out = run_harness("fuzz_images.py", tmp_path, "-runs=50", code=code)
    assert rc != 0 and "KeyError" in out and "not an ImageError" in out
    assert list(tmp_path.glob("crash-*")), "libFuzzer keeps the input that crashed"
