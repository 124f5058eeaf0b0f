"""Keep the service's memory flat however large the layers: two glibc malloc arenas instead of one per thread.

glibc gives each thread that allocates its own arena (up to 8 per core) and keeps freed blocks there. The part
uploads read the staged file in 1 MiB blocks from a pool of threads, so resident memory grew with every pool
thread that had ever sent a part, which is to say with the layer's size: a fresh process peaked at 103-110 MiB
for a 512 MiB push and 111 MiB, still rising, for 2 GiB; with two arenas, 96-98 MiB for 2 GiB, flat, and no
measurable CPU cost (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas() -> None:
    """Call before threads start. A `MALLOC_ARENA_MAX` set by the operator wins; other C libraries are left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, ARENAS)
