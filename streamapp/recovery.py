"""Exact recovery: after every rebalance, resume each partition right after its model's offset.

Kafka's committed offset cannot be trusted for a model: it covers events the lost in-memory model
had learned since its last snapshot. The snapshot, which carries the offset of the last event it
contains, is the source of truth. This runs as the snapshot table's on_recover callback: after
Faust has restored the table from its changelog and before it seeks the consumer to the committed
offsets. For each partition it now owns it takes the newest valid state (the one in memory, else
the snapshot, else a new model) and commits `state.offset + 1`, so Faust's own seek replays
exactly the events the model has not learned. Events replayed past the old commit were scored
before: their predictions are emitted again with `replayed: true`.

Between rebalances Faust can still drop an event fetched around one; the agent's offset guard
notices the gap and `seek_back` fetches the events again.

If the log no longer holds the events after the snapshot (retention deleted them), the model
cannot be exact: this says so loudly, counts the lost events and continues from the earliest one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Protocol, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP

from streamapp import seam
from streamapp.partition import PartitionState

log = logging.getLogger(__name__)


class RecoveryError(RuntimeError):
    """The consumer could not be moved to the model's offsets; the worker must not go on."""


class ConsumerOffsets(Protocol):
    """The part of Faust's consumer that recovery uses (a small seam for unit tests)."""

    async def seek_to_committed(self) -> Mapping[TP, int | None]: ...

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def _commit(self, offsets: Mapping[TP, int]) -> bool: ...

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None: ...


class StateSource(Protocol):
    def state_for_recovery(self, partition: int) -> tuple[PartitionState, str]: ...

    def new_state(self, partition: int) -> PartitionState: ...


async def resume_at_model_offsets(
    processor: StateSource, consumer: ConsumerOffsets, actives: Iterable[TP]
) -> dict[int, tuple[int | None, int]]:
    """Rewind each active source partition to its model; returns {partition: (committed, resume)}."""
    tps = sorted(actives)
    if not tps:
        return {}
    committed = {
        TP(tp.topic, tp.partition): offset for tp, offset in (await consumer.seek_to_committed()).items()
    }
    earliest = {
        TP(tp.topic, tp.partition): offset for tp, offset in (await consumer.earliest_offsets(*tps)).items()
    }
    ends = {TP(tp.topic, tp.partition): offset for tp, offset in (await consumer.highwaters(*tps)).items()}
    commits: dict[TP, int] = {}
    positions: dict[TP, int] = {}
    plan: dict[int, tuple[int | None, int]] = {}
    now = time.time()
    for tp in tps:
        state, source = processor.state_for_recovery(tp.partition)
        end = ends.get(tp)
        if end is not None and state.offset >= end:
            log.error(
                "partition %d: SNAPSHOT AHEAD OF THE LOG: the model applied offset %d but %s ends "
                "at %d (topic recreated?); starting a new model",
                tp.partition,
                state.offset,
                tp.topic,
                end,
            )
            state, source = processor.new_state(tp.partition), "new"
        first = earliest.get(tp, 0)
        if source == "new":
            state.offset = max(state.offset, first - 1)  # a new model starts where the log starts
        elif state.offset + 1 < first:
            lost = first - state.offset - 1
            log.error(
                "partition %d: RETENTION LOSS: %d events after the model's offset %d were deleted "
                "from %s before they were learned; continuing from offset %d, this partition's "
                "model is NOT exact any more",
                tp.partition,
                lost,
                state.offset,
                tp.topic,
                first,
            )
            state.lost_to_retention(first, lost)
        resume = state.offset + 1
        behind = committed.get(tp)
        state.recovered(now, source, behind, resume)
        plan[tp.partition] = (behind, resume)
        positions[tp] = resume
        if behind != resume:
            commits[tp] = resume
        log.info(
            "partition %d: recovered from %s at offset %d; committed %s, resuming at %d%s",
            tp.partition,
            source,
            resume - 1,
            behind,
            resume,
            f" ({behind - resume} events replay)" if behind is not None and behind > resume else "",
        )
    if commits and not await seam.commit(consumer, commits):
        raise RecoveryError(f"could not commit the model offsets {commits}")
    # Position every partition explicitly too: Faust's own seek skips partitions committed at 0
    # or never, and leaves them wherever the fetcher got to while recovery ran.
    await consumer.seek_wait(positions)
    return plan


async def seek_back(app: faust.App, where: TP, offset: int) -> None:
    """Move one partition's consumer back to `offset`, to fetch events that Faust dropped.

    Pause, let the batch already fetched drain, seek, resume: Faust drops re-read records that
    arrive while its drain loop still holds later ones.
    """
    tp = TP(where.topic, where.partition)  # Faust's own TP: its partition sets assert the type

    def still_ours() -> bool:
        # A rebalance positions every partition anyway (above), and seeking a partition that is
        # no longer assigned would crash the consumer thread.
        return not app.rebalancing and tp in app.consumer.assignment()

    if not still_ours():
        return
    app.consumer.pause_partitions([tp])
    await asyncio.sleep(0.5)
    if not still_ours():
        return  # taken away in the meantime: its next owner's recovery positions it
    try:
        await cast(ConsumerOffsets, app.consumer).seek_wait({tp: offset})
    except IllegalStateError:
        return  # the same, a moment later
    app.consumer.resume_partitions([tp])
