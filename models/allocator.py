"""The process's memory: glibc allocator settings for the command-line entry points (never applied
on import), and the peak resident set size every run records.

PyTorch on CPU frees a batch's activations and allocates them again for the next batch. glibc serves
blocks above its mmap threshold (at most 32 MB by default) with fresh ``mmap`` calls and returns freed
heap to the OS, so every batch faults its activations in again, page by page: in the headline run
about 225 million page faults and a quarter of the CPU time in the kernel, most of it in Integrated
Gradients. Raising the mmap threshold and the trim threshold keeps freed blocks for reuse, which is
what jemalloc or tcmalloc would give (1.5–1.8x faster IG on 2 cores, same numbers bit for bit: it
changes where memory comes from, not what is computed). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import resource

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap (and are reused)
TRIM_THRESHOLD = (1 << 31) - 1  # free heap is kept rather than returned to the OS


def keep_freed_memory() -> bool:
    """Apply the settings to this process; True where glibc accepted both. ``mallopt`` is looked up
    among the symbols the process already has (no library search, no ``ldconfig`` subprocess)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
