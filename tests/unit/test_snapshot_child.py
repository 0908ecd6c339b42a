"""Bytes made in a forked child (streamapp/snapshot_child.py): the parent's loop goes on, its
objects are untouched, and every way a child can end is reported, with nothing left behind."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
import warnings
from collections.abc import Callable

import pytest

from streamapp.snapshot_child import Child, ChildFailed


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def gone(pid: int) -> bool:
    """Not running and not a zombie: reaped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")
    return False


def run_child(produce: Callable[[], bytes]) -> tuple[Child, bytes | ChildFailed]:
    async def main() -> tuple[Child, bytes | ChildFailed]:
        child = Child(produce)
        try:
            return child, await child.result()
        except ChildFailed as exc:
            return child, exc

    return asyncio.run(main())


def test_the_childs_bytes_come_back_whole_and_nothing_is_left_open() -> None:
    before = open_fds()
    payload = os.urandom(3_000_000)  # several writes of CHUNK, larger than a pipe holds
    child, result = run_child(lambda: payload)
    assert result == payload
    assert gone(child.pid)
    assert open_fds() == before


def test_what_the_child_changes_stays_in_the_child() -> None:
    state = {"learned": 1}

    def produce() -> bytes:
        state["learned"] = 999  # a copy-on-write page of the child's
        return pickle.dumps(state)

    _, result = run_child(produce)
    assert isinstance(result, bytes) and pickle.loads(result) == {"learned": 999}
    assert state == {"learned": 1}


def test_an_exception_in_the_child_is_its_reason_and_never_runs_the_parents_code() -> None:
    parent = os.getpid()

    def produce() -> bytes:
        raise ValueError("over the limit")

    child, result = run_child(produce)
    assert os.getpid() == parent
    assert isinstance(result, ChildFailed) and str(result) == "ValueError: over the limit"
    assert gone(child.pid)


def test_a_child_killed_by_a_signal_is_reported_with_it() -> None:
    child, result = run_child(lambda: os.kill(os.getpid(), signal.SIGKILL) or b"")  # type: ignore[func-returns-value]
    assert isinstance(result, ChildFailed) and "SIGKILL" in str(result)
    assert gone(child.pid)


def test_a_sigterm_to_the_process_group_ends_the_child_and_does_not_reach_the_parents_loop() -> None:
    """The child shares the parent's signal wakeup fd: its handler must not write there."""
    received: list[int] = []

    async def main() -> bytes | ChildFailed:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, received.append, signal.SIGTERM)
        try:
            child = Child(lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5) or b"")  # type: ignore[func-returns-value]
            try:
                return await child.result()
            except ChildFailed as exc:
                await asyncio.sleep(0.05)  # a wakeup byte written by the child would be read now
                return exc
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    result = asyncio.run(main())
    assert isinstance(result, ChildFailed) and "SIGTERM" in str(result)
    assert received == []


def test_the_loop_goes_on_while_the_child_works() -> None:
    async def main() -> tuple[int, bytes]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        result = await Child(lambda: time.sleep(0.3) or b"done").result()  # type: ignore[func-returns-value]
        ticker.cancel()
        return ticks, result

    ticks, result = asyncio.run(main())
    assert result == b"done"
    assert ticks >= 5, "the parent's loop was blocked while the child worked"


def test_a_cancelled_wait_kills_and_reaps_the_child() -> None:
    before = open_fds()

    async def main() -> Child:
        child = Child(lambda: time.sleep(30) or b"")  # type: ignore[func-returns-value]
        waiting = asyncio.ensure_future(child.result())
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return child

    started = time.monotonic()
    child = asyncio.run(main())
    assert time.monotonic() - started < 10, "the child was waited for, not killed"
    assert gone(child.pid)
    assert open_fds() == before


def test_forking_beside_other_threads_warns_nothing() -> None:
    """Python 3.12+ warns about any fork of a threaded process; the module argues this one safe."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, result = run_child(lambda: b"ok")
    finally:
        stop.set()
        thread.join()
    assert result == b"ok"


def test_a_child_that_cannot_be_watched_is_not_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """No file descriptor left for its pidfd: the fork is undone and the error raised."""
    before = open_fds()
    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        forked.append(pid)
        return pid

    def no_pidfd(pid: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    with pytest.raises(OSError, match="Too many open files"):
        Child(lambda: time.sleep(30) or b"")  # type: ignore[func-returns-value]
    assert forked and gone(forked[0])
    assert open_fds() == before
