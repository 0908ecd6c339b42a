"""glibc's malloc told to give large buffers back to the system as soon as they are freed.

Why. glibc serves a request of M_MMAP_THRESHOLD bytes or more with a mapping of its own, which
`free` unmaps. The threshold starts at 128 KiB and then follows the buffers freed, up to 32 MiB:
once the first 4 MB snapshot is freed, the next ones come from the heap, and the heap can only
shrink down to the highest object still alive, such as a waiting event allocated while a snapshot
was being made. So a worker's RSS creeps up with snapshots it no longer holds. Measured with
tests/security/test_flood.py (2 KB events, 4 MB snapshots made in forked children, a 16 MiB
RocksDB budget): RSS 213 -> 255 MB over 36,000 events with the moving threshold; 187-218 MB and
no trend in three runs with it fixed at 1 MiB. Fixing it (mallopt(3)) ends the moving.

An operator's MALLOC_MMAP_THRESHOLD_ (glibc's own variable) wins; elsewhere than glibc nothing is
done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: requests of this many bytes or more are mapped, and unmapped when freed
MMAP_THRESHOLD = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_large_buffers(threshold: int = MMAP_THRESHOLD) -> str:
    """Fix glibc's mmap threshold at `threshold` bytes; says what was done, for the log."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return "malloc: MALLOC_MMAP_THRESHOLD_ is set, left as it is"
    if platform.libc_ver()[0] != "glibc":
        return "malloc: not glibc, left as it is"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return "malloc: mallopt(M_MMAP_THRESHOLD) refused, left as it is"
    return f"malloc: buffers of {threshold >> 10} KiB or more go back to the system when freed"
