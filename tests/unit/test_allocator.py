"""The allocator's tuning: a buffer freed goes back to the system on glibc even after larger ones
were freed, and an operator's own MALLOC_MMAP_THRESHOLD_ wins. Each check runs in a process of
its own: the setting is the whole process's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from streamapp import allocator

#: Frees a 4 MiB buffer (glibc's moving threshold then rises to 4 MiB), then allocates 2 MiB:
#: prints whether those came as a mapping of their own (unmapped when freed) or from the heap.
SECOND_BUFFER_MAPPED = """
import ctypes, sys
from streamapp import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    allocator.return_large_buffers()
first = bytearray(4 << 20)
del first
mapped = libc.mallinfo2().hblkhd
second = bytearray(2 << 20)
print(libc.mallinfo2().hblkhd - mapped >= 2 << 20)
"""


def second_buffer_mapped(mode: str) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run(
        [sys.executable, "-c", SECOND_BUFFER_MAPPED, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip() == "True"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
def test_a_buffer_goes_back_to_the_system_even_after_a_larger_one_was_freed() -> None:
    assert not second_buffer_mapped("moving"), "glibc's own threshold should have risen (the problem)"
    assert second_buffer_mapped("fixed")


def test_an_operators_threshold_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert "left as it is" in allocator.return_large_buffers()
