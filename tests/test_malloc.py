"""The allocator settings of ``doohable serve``: glibc takes the arena cap, the cap is exported
to worker processes (an operator's own ``MALLOC_ARENA_MAX`` wins), and trimming answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from doohable import malloc

GLIBC = malloc._glibc() is not None


def test_arena_cap_is_taken_and_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.limit_arenas(2) is GLIBC
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_ARENA_MAX'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "2"  # uvicorn's workers start with the cap


def test_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc.limit_arenas(2) is GLIBC
    import os

    assert os.environ["MALLOC_ARENA_MAX"] == "4"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "lots")  # not a number: left to glibc, nothing set here
    assert malloc.limit_arenas(2) is False


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_freed_pages_back() -> None:
    """Every other 100 kB block freed: holes inside the heap that free() alone keeps."""
    import psutil

    blocks = [bytearray(100_000) for _ in range(1000)]  # below the mmap threshold: on the heap
    del blocks[::2]
    before = psutil.Process().memory_info().rss
    assert malloc.trim() is True
    released = before - psutil.Process().memory_info().rss
    assert released > 25 * 2**20, f"only {released / 2**20:.1f} MiB given back"
    assert len(blocks) == 500
