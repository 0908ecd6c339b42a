"""Bytes made in a forked child: where a large snapshot is pickled, off the worker's event loop.

Why. Pickling a partition's models on the loop stops every partition while it runs (about 10 ms
per MB: a forest of a few MB at every interval), and it leaves the live model slower afterwards:
pickle reads each object's `__dict__`, which ends CPython's inline attribute layout for that
object. Measured on 40,000 card events, 8 partitions, a snapshot every 1,000 events of a
partition: HalfSpaceTrees learned 17% (3.13) and 28% (3.11) slower than without snapshots, of
which the pickling itself was 8% and 6%. A forked child sees the worker's memory as it was at the
fork (copy-on-write) and pickles that; the worker goes on at once and its objects are never
touched. A fork is not free (streamapp/snapshot_writer.py says when it pays).

Fork safety. A fork copies only the thread that calls it; a lock another thread held stays held
in the child for good. So the child calls nothing another thread of the worker could hold a lock
in:

- it runs `produce` (pickling CPython objects under the GIL the forking thread holds; glibc
  re-initialises malloc's locks in the child of a fork), writes the bytes to a memfd with
  `os.write`, and leaves with `os._exit`: no atexit handlers, no destructors, no stdio flushed a
  second time, no logging;
- RocksDB's background threads (rocksdict) and the loop's executor threads (DNS lookups) do not
  exist in the child, and nothing there calls RocksDB or the resolver; `os._exit` skips RocksDB's
  close, so the parent's database files are not touched;
- aiokafka runs on the loop, without threads; the child's copies of its sockets are closed by
  `os._exit` without a shutdown, which leaves the parent's connections as they are;
- the cyclic collector is off in the child (a collection would walk, and so copy, the whole
  heap), and SIGINT or SIGTERM sent to the process group ends the child rather than waking the
  parent's loop through the signal wakeup fd both share.

Python 3.12+ warns about every fork of a process with threads; that warning is silenced for this
fork alone, on the argument above. The child is reaped through a pidfd, so there is no SIGCHLD
handler and no zombie, also when the wait is cancelled (a revoked partition, a stopping worker):
the child is then killed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import warnings
from collections.abc import Callable

#: how many bytes a child writes at a time
CHUNK = 1 << 20


class ChildFailed(Exception):
    """The child raised (its exception type and message) or died (by which signal)."""


def available() -> str | None:
    """Why bytes cannot be made in a child on this platform, or None when they can."""
    missing = [name for name in ("fork", "pidfd_open", "memfd_create") if not hasattr(os, name)]
    return f"os.{', os.'.join(missing)} missing (Linux 5.3+ has them)" if missing else None


class Child:
    """A forked child making bytes; `result` waits for them without blocking the loop."""

    def __init__(self, produce: Callable[[], bytes]) -> None:
        self.out = os.memfd_create("streamapp-child", os.MFD_CLOEXEC)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            _run_child(produce, self.out)  # never returns
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:  # no file descriptor left: the child is not left behind either
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(self.out)
            raise
        self.reaped = False

    async def result(self) -> bytes:
        """The child's bytes once it has exited; ChildFailed when it raised or died. Cancelled,
        it kills the child first."""
        try:
            await self._exited()
        except BaseException:
            self.kill()
            raise
        _, status = os.waitpid(self.pid, 0)  # at once: the pidfd said it exited
        self.reaped = True
        try:
            data = os.pread(self.out, os.fstat(self.out).st_size, 0)
        finally:
            self._close()
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            raise ChildFailed(f"the child was killed by {name} (the memory limit, or an operator?)")
        if os.WEXITSTATUS(status) != 0:
            reason = data.decode("utf-8", "replace")
            raise ChildFailed(reason or f"the child exited with {os.WEXITSTATUS(status)}")
        return data

    def kill(self) -> None:
        """Stop the child now and reap it (SIGKILL: gone within milliseconds); nothing once it
        is reaped."""
        if not self.reaped:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.reaped = True
        self._close()

    def _close(self) -> None:
        for fd in (self.out, self.pidfd):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
        self.out = self.pidfd = -1

    async def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(self.pidfd, readable)  # a pidfd is readable once its process has exited
        try:
            await exited
        finally:
            loop.remove_reader(self.pidfd)


def _run_child(produce: Callable[[], bytes], out: int) -> None:
    """The child's whole life: nothing raised here can return into the parent's code."""
    status = 1
    try:
        gc.disable()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        try:
            data = produce()
            status = 0
        except BaseException as exc:  # sent to the parent as the reason
            data = f"{type(exc).__name__}: {exc}".encode()
        view = memoryview(data)
        while view:
            view = view[os.write(out, view[:CHUNK]) :]
    except BaseException:  # nothing may escape into the parent's code
        status = 2
    finally:
        os._exit(status)
