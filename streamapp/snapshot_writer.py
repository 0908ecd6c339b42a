"""When and where a partition's snapshot is made: on the loop, or in a forked child whose bytes
are written when they come back.

The processor asks for a snapshot between two records, when the partition's state is whole; a
child encodes that state (streamapp/snapshot_child.py: pickled, signed, its size checked) while
the partition goes on learning. The bytes are written only if the state is still the partition's
live one: a partition revoked, rewound or recovered since the fork drops them (and the child is
killed when that happens first). A snapshot is an earlier state than the live one, written
later: it names its own offset, and recovery replays the log from there, so it is as exact as a
snapshot made on the loop.

A fork is not free: the worker's page tables are copied, and every page the worker writes
afterwards faults once. Measured (bench/snapshot_cost.py, a 240 MB process, Python 3.13): about
10 ms per fork, about what pickling 1 MB on the loop costs; so STREAMAPP_SNAPSHOT_IN=auto (the
default) forks for the partitions whose last snapshot was CHILD_OVER or more and pickles the
smaller ones on the loop. One child at a time: a second would compete for the same cores. A
partition due while one runs is started when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from streamapp import snapshot
from streamapp.partition import PartitionState
from streamapp.snapshot_child import Child, ChildFailed
from streamapp.snapshot_store import SnapshotStore

log = logging.getLogger(__name__)

#: a snapshot at least this large is flushed before the next one is started: the producer packs
#: the records of every partition bound for one broker into one request, and two 60 MB snapshots
#: would pass the broker's socket.request.max.bytes (100 MiB by default)
FLUSH_SNAPSHOTS_OVER = 4 * 1024 * 1024
#: seconds a child may take before it is killed and its snapshot counted as not written: one at a
#: time runs, so a hung child would hold back every large partition's snapshot for good (pickling
#: the largest state allowed, 64 MiB, takes about a second)
CHILD_TIMEOUT = 300.0
#: with STREAMAPP_SNAPSHOT_IN=auto, a partition whose last snapshot was this large is snapshotted
#: in a child (pickling about 1 MB on the loop costs what a fork costs)
CHILD_OVER = 1024 * 1024


class SnapshotWriter:
    """The worker's snapshots: small ones on the loop, the others in a child, one at a time."""

    def __init__(
        self,
        store: SnapshotStore,
        live: Callable[[int], PartitionState | None],
        flush: Callable[[], Awaitable[None]],
        over: int | None = 0,
    ) -> None:
        self.store = store
        #: the size of a partition's last snapshot from which it goes to a child (None: never)
        self.over = over
        self.live = live  # the partition's live state, if this worker still has one
        self.flush = flush
        self.running: tuple[int, asyncio.Task[None]] | None = None  # (partition, its task)
        self.forks = 0  # children started since this worker started

    @classmethod
    def for_setting(
        cls,
        snapshot_in: str,
        store: SnapshotStore,
        live: Callable[[int], PartitionState | None],
        flush: Callable[[], Awaitable[None]],
    ) -> SnapshotWriter:
        """STREAMAPP_SNAPSHOT_IN: child, loop or auto (a child from CHILD_OVER)."""
        return cls(store, live, flush, {"child": 0, "auto": CHILD_OVER}.get(snapshot_in))

    def in_child(self, state: PartitionState) -> bool:
        """Whether the partition's next snapshot is made in a child."""
        return self.over is not None and state.runtime.snapshot_bytes >= self.over

    def due(self, state: PartitionState, now: float) -> bool:
        """The partition's interval has passed (or its models changed) and its snapshot can
        start now (in a child only when none is running)."""
        return self.store.due(state, now) and (self.running is None or not self.in_child(state))

    async def take(self, state: PartitionState, now: float) -> None:
        """Snapshot `state` as it is now: started in a child, or made and written on the loop."""
        if self.in_child(state):
            self.start(state, now)  # written when the child is done
            return
        size = self.store.take(state, now)
        if size is not None and size > FLUSH_SNAPSHOTS_OVER:
            await self.flush()  # one large snapshot in flight at a time (FLUSH_SNAPSHOTS_OVER)

    def start(self, state: PartitionState, now: float) -> None:
        """Fork a child encoding `state` as it is now; the bytes are written when they are back."""
        encode = partial(snapshot.encode, state, self.store.max_bytes, self.store.signer)
        try:
            child = Child(encode)
        except OSError as exc:  # no memory or no process left for a fork
            state.runtime.snapshot_started(now)
            self.store.not_written(state, exc)
            return
        self.forks += 1
        state.runtime.snapshot_started(now)
        task = asyncio.ensure_future(self._finish(state, child))
        self.running = (state.partition, task)
        task.add_done_callback(partial(self._done, child))

    def _done(self, child: Child, task: asyncio.Task[None]) -> None:
        child.kill()  # reaped already, unless the task was cancelled before it ever ran
        if self.running is not None and self.running[1] is task:
            self.running = None

    async def _finish(self, state: PartitionState, child: Child) -> None:
        started = time.monotonic()
        try:
            blob = await asyncio.wait_for(child.result(), CHILD_TIMEOUT)
        except (ChildFailed, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):  # wait_for cancelled the wait: the child is killed
                exc = ChildFailed(f"the child ran for more than {CHILD_TIMEOUT:g} s and was killed")
            if self.live(state.partition) is state:
                self.store.not_written(state, exc)
            return
        if self.live(state.partition) is not state:
            log.info("partition %d: snapshot dropped, the partition changed hands since", state.partition)
            return
        try:
            header = self.store.write(state.partition, blob)
        except Exception as exc:  # Faust's table: the partition is no longer assigned, metadata
            self.store.not_written(state, exc)
            return
        state.runtime.snapshot_taken(header.offset, len(blob))
        log.debug(
            "partition %d: snapshot #%d of offset %d, %d bytes, made in %.1f ms",
            state.partition,
            header.seq,
            header.offset,
            len(blob),
            (time.monotonic() - started) * 1000,
        )
        if len(blob) > FLUSH_SNAPSHOTS_OVER:
            await self.flush()

    def cancel(self, partition: int) -> None:
        """The partition leaves this worker (or is rewound): its child, if any, is killed."""
        if self.running is not None and self.running[0] == partition:
            self.running[1].cancel()

    async def close(self) -> None:
        """The worker stops: kill the child, if any, and wait until it is reaped."""
        if self.running is not None:
            task = self.running[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
