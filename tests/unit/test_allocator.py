"""The allocator's tuning: applied on glibc, and an operator's own MALLOC_MMAP_THRESHOLD_ wins."""

from __future__ import annotations

import platform

import pytest

from streamapp import allocator


def test_an_operators_threshold_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert "left as it is" in allocator.return_large_buffers()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert "1024 KiB or more go back" in allocator.return_large_buffers()
