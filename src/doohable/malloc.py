"""The C allocator's settings for a long-running server (glibc only; elsewhere nothing is done).

glibc gives each thread that allocates concurrently its own heap ("arena", up to 8 per core)
and returns freed memory to the system only from the top of a heap. A server that runs
requests on a pool of threads (uvicorn's) then grows its resident memory slowly for hours
though the Python heap stays flat (docs/benchmarks.md, Soak). ``doohable serve`` caps the
arenas (:func:`limit_arenas`) and the app gives freed pages back every minute (:func:`trim`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from functools import lru_cache

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2
TRIM_EVERY_S = 60.0


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The running glibc, or None (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas at ``arenas`` (unless ``MALLOC_ARENA_MAX`` is set), and
    export the cap to the processes it starts (uvicorn's workers). True when glibc took it."""
    chosen = os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))
    libc = _glibc()
    if libc is None or not chosen.isdigit():
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(chosen)))


def trim() -> bool:
    """Give the free pages of every arena back to the system; True when some were released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
