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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP, TableT, TopicT

from streamapp import seam
from streamapp.consumer import BatchConsumer
from streamapp.partition import PartitionState
from streamapp.transactions import FENCED

if TYPE_CHECKING:
    from streamapp.processor import Processor

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


class OnePartition:
    """The consumer's offsets of one partition, for recovering it alone (after a transaction
    failed): reading its committed offset moves no partition."""

    def __init__(self, consumer: BatchConsumer, tp: TP) -> None:
        self.consumer, self.tp = consumer, tp

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        return {self.tp: await self.consumer.committed_offset(self.tp)}

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return await self.consumer.earliest_offsets(*partitions)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return await self.consumer.highwaters(*partitions)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        raise AssertionError("a partition recovered alone is never rewound by a commit")

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        await cast(ConsumerOffsets, self.consumer).seek_wait(partitions)


class StateSource(Protocol):
    def state_for_recovery(self, partition: int) -> tuple[PartitionState, str]: ...

    def new_state(self, partition: int) -> PartitionState: ...


async def resume_at_model_offsets(
    processor: StateSource, consumer: ConsumerOffsets, actives: Iterable[TP], rewind_commit: bool = True
) -> dict[int, tuple[int | None, int]]:
    """Rewind each active source partition to its model; returns {partition: (committed, resume)}.

    `rewind_commit`: commit the model's offset where the committed one is ahead, so that Faust's
    seek to the committed offsets lands there. Not with exactly_once: there the committed offset
    says which outputs are visible, and the consumer holds the model's position instead
    (BatchConsumer.seek_to_committed)."""
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
            state.events_lost_to_retention += lost
            state.offset = first - 1  # the events before `first` are gone: skip them
        resume = state.offset + 1
        behind = committed.get(tp)
        recovered(state, now, source, behind, resume)
        plan[tp.partition] = (behind, resume)
        positions[tp] = resume
        if behind != resume and rewind_commit:
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


def recovered(state: PartitionState, now: float, source: str, committed: int | None, resume: int) -> None:
    """Bookkeeping after a rebalance placed the partition here, resuming at `resume`."""
    runtime = state.runtime
    runtime.recovered_at, runtime.recovered_from, runtime.recovery_committed = now, source, committed
    runtime.replay_until = max(committed or 0, resume)
    runtime.positioned = True
    state.offset = resume - 1


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


class SourcePartitions:
    """The source topic's partitions this worker's consumer holds."""

    def __init__(self, app: faust.App, is_source: Callable[[str], bool]) -> None:
        self.app, self.is_source = app, is_source

    def source_topic(self, partition: int) -> str | None:
        """The topic the partition's events are read from, while it is assigned here."""
        held = self.app.consumer.assignment()
        return next((tp.topic for tp in held if tp.partition == partition and self.is_source(tp.topic)), None)

    def actives(self) -> set[TP]:
        """What this worker processes now. The assignor's actives can still be an earlier
        generation's while recovery runs (seen: a worker resurrected every partition it had
        before two workers joined): only what the consumer holds now is ours."""
        held = self.app.consumer.assignment()
        return {tp for tp in self.app.assignor.assigned_actives() if self.is_source(tp.topic) and tp in held}


class Rebalance:
    """The processor's part in a rebalance: release what went, position what came."""

    def __init__(
        self,
        app: faust.App,
        processor: Processor,
        sources: SourcePartitions,
        snapshots: TableT,
        outputs: Sequence[TopicT],
    ) -> None:
        self.app, self.processor, self.sources, self.snapshots = app, processor, sources, snapshots
        self.outputs = outputs  # the predictions and dead-letter topics
        self.transactions = processor.transactions
        self.reclaims: set[asyncio.Task[None]] = set()
        if self.transactions is not None:
            self.transactions.on_failure = self.transaction_failed

    async def on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        """Before any event flows: create the output topics with P partitions rather than let
        the broker auto-create them with its default of one."""
        for topic in self.outputs:
            await topic.maybe_declare()
        self.processor.keep_only({tp.partition for tp in assigned if self.sources.is_source(tp.topic)})

    async def resume_models(self) -> None:
        """After the table is restored, before Faust seeks: move each partition to its model."""
        try:
            actives = self.sources.actives()
            self.processor.keep_only({tp.partition for tp in actives})
            # ConsumerT's stubs omit _commit and seek_to_committed, which the consumer has.
            consumer = cast(ConsumerOffsets, self.app.consumer)
            if self.transactions is None:
                await resume_at_model_offsets(self.processor, consumer, actives)
            else:
                await self.resume_in_transactions(actives)
            # The changelog of an active partition has nothing more to give: this worker writes
            # it. Fetched anyway, its records (our own snapshots) stalled fetches (measured: 100
            # ms per partition after its first snapshot; p99 latency 115 -> 30 ms, HT at 7,000/s).
            # Paused in aiokafka itself: Faust's own pause only filters what it hands on, and a
            # fetched batch nobody drains holds up the next fetch for 100 ms (its prefetch backoff).
            changelog = self.snapshots.changelog_topic.get_topic_name()
            consumer_seam = cast(BatchConsumer, self.app.consumer)
            await consumer_seam.pause_in_client([TP(changelog, tp.partition) for tp in actives])
        except IllegalStateError as exc:
            # A new rebalance took partitions away while this one was being positioned; its own
            # recovery runs this again for the partitions this worker then owns.
            log.warning("streamapp: rebalanced again during recovery (%s); positioning then", exc)
        except Exception as exc:
            # Faust runs recover callbacks under asyncio.wait, which would swallow this.
            log.exception("streamapp: recovery failed, stopping the worker")
            await self.app.crash(exc)

    async def resume_in_transactions(self, actives: set[TP]) -> None:
        """exactly_once: claim each partition's transactional id first (it fences the earlier
        owner, whose open transaction is aborted or completed), then read the committed offsets,
        which no zombie can move any more; outputs are emitted from there on."""
        assert self.transactions is not None
        # No partition is held while recovery runs: an earlier generation's would be moved by
        # the seek that reads the committed offsets (the revocation does not always clear them).
        cast(BatchConsumer, self.app.consumer).held = set()
        await self.transactions.claim(actives)
        consumer = cast(ConsumerOffsets, self.app.consumer)
        plan = await resume_at_model_offsets(self.processor, consumer, actives, rewind_commit=False)
        for tp in actives:
            committed, resume = plan[tp.partition]
            txn = self.transactions.get(tp.partition)
            if txn is not None:
                txn.start_at(max(committed or 0, resume))
        cast(BatchConsumer, self.app.consumer).held = set(actives)

    def model_positions(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Where each held partition's consumer belongs: right after its model's offset."""
        states = self.processor.states
        return {tp: states[tp.partition].offset + 1 for tp in tps if tp.partition in states}

    async def transaction_failed(self, partition: int, exc: BaseException) -> None:
        """A partition's transaction failed: its state goes. Fenced, another worker holds the
        partition and the rebalance that tells this one is coming; otherwise (a broker that went
        away, say) the partition is claimed again after a session timeout, if it is still ours."""
        self.processor.release(partition)  # it learned events whose outputs were aborted
        if isinstance(exc, FENCED):
            return
        task = asyncio.ensure_future(self.reclaim(partition, self.app.consumer_generation_id))
        self.reclaims.add(task)
        task.add_done_callback(self.reclaims.discard)

    async def reclaim(self, partition: int, generation: int) -> None:
        assert self.transactions is not None
        await asyncio.sleep(self.processor.settings.session_timeout)
        topic = self.sources.source_topic(partition)
        if topic is None or self.app.rebalancing or self.app.consumer_generation_id != generation:
            return  # a rebalance came: its recovery claims what this worker holds now
        tp = TP(topic, partition)
        try:
            txn = await self.transactions.reclaim(tp)
            one = OnePartition(cast(BatchConsumer, self.app.consumer), tp)
            plan = await resume_at_model_offsets(self.processor, one, [tp], rewind_commit=False)
            committed, resume = plan[partition]
            txn.start_at(max(committed or 0, resume))
            log.warning("partition %d: claimed again after its transaction failed", partition)
        except Exception:
            log.exception("partition %d: could not claim it again; stopping the worker", partition)
            await self.app.crash(RuntimeError(f"partition {partition}: transactional id not claimed"))

    def lag(self, partition: int) -> int | None:
        """Events of the source partition not yet applied, from the consumer's last fetch."""
        state = self.processor.states.get(partition)
        topic = self.sources.source_topic(partition)
        if state is None or topic is None:
            return None
        highwater = self.app.consumer.highwater(TP(topic, partition))
        return None if highwater is None else max(0, highwater - state.offset - 1)
