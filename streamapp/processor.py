"""The worker's partitions: each fetched record goes to its partition's state, and what came of
it goes out.

It reads like the data flow of the design: a record is read into a message (a bad one is refused
with its reason), applied to its partition's state (`PartitionState.apply`, the pure core), and
the outcome is routed: a prediction to the predictions topic, a dead letter to the dead-letter
topic, a gap to a seek back, a model that failed half-way to a rewind. Every N events or T
seconds the partition state is written to the snapshot store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import records
from streamapp.decoding import Decoder
from streamapp.gaps import GapError, GapWatch
from streamapp.histogram import Histogram
from streamapp.outbox import Outbox
from streamapp.output_format import AvroPredictions
from streamapp.partition import (
    Controlled,
    DeadLetter,
    Gap,
    Message,
    PartitionState,
    Poisoned,
    Scored,
    Skipped,
)
from streamapp.prediction import Times, prediction_record
from streamapp.reading import RecordReader
from streamapp.records import Limits
from streamapp.settings import Settings
from streamapp.snapshot_store import SnapshotStore, SnapshotTable
from streamapp.snapshot_writer import SnapshotWriter
from streamapp.transactions import PartitionTransaction, Transactions

log = logging.getLogger(__name__)

#: (topic, partition, key, value, headers): hands one record to the producer
Emit = Callable[[str, int, bytes | None, bytes | None, list[tuple[str, bytes]] | None], Awaitable[None]]


class Sink(Protocol):
    """Where one batch's outputs go: straight to the producer (at least once), or into the
    partition's open transaction (exactly once)."""

    @property
    def exactly_once(self) -> bool:
        """Outputs of offsets an earlier owner scored are visible already: replay them silently."""

    @property
    def emit(self) -> Emit: ...

    def outbox(self, topic: str, partition: int) -> Outbox: ...

    def cover(self, offset: int) -> None: ...


@dataclass(frozen=True)
class Outputs:
    """Where the processor's results go: the worker's Kafka clients, or lists in a test."""

    #: hands a record to the producer (delivery is checked asynchronously): dead letters
    emit: Emit
    #: batches the records of one topic partition: predictions
    outbox: Callable[[str, int], Outbox]
    #: moves the consumer of one partition back to an offset
    seek: Callable[[TP, int], Awaitable[None]]
    #: waits until everything produced so far is acknowledged by the broker
    flush: Callable[[], Awaitable[None]]
    #: with STREAMAPP_PROCESSING_GUARANTEE=exactly_once, the partitions' transactions
    transactions: Transactions | None = None

    exactly_once = False

    def cover(self, offset: int) -> None:
        """At least once, the consumer commits the offsets (Processor.handle_batch returns them)."""


@dataclass
class Timing:
    """One partition's latency histograms and output count since this worker took it."""

    predict: Histogram = field(default_factory=Histogram)
    learn: Histogram = field(default_factory=Histogram)
    end_to_end: Histogram = field(default_factory=Histogram)  # produced -> prediction handed over
    predictions: int = 0
    alerts: int = 0  # anomaly scores at or above STREAMAPP_ANOMALY_THRESHOLD

    def observe(self, scored: Scored, times: Times, alert: bool) -> None:
        self.predict.observe(scored.predict_s)
        self.learn.observe(scored.learn_s)
        self.end_to_end.observe(times.sent - times.produced)
        self.predictions += 1
        self.alerts += alert


class Processor:
    """Owns the in-memory partition states of one worker; the web views only read them."""

    def __init__(self, settings: Settings, store: SnapshotStore, outputs: Outputs) -> None:
        self.settings = settings
        self.store = store
        self._rollback_source = store.rollback_source
        self.outputs = outputs
        self.signer = store.signer  # signs and verifies control events too
        self.kept_headers, self.kept_snapshots = store.kept_headers, store.kept_snapshots  # web views
        self.limits = Limits.from_settings(settings)
        self.decoder = Decoder.from_settings(settings, self.limits)
        self.reader = RecordReader(settings, self.decoder, self.signer)
        self.avro_predictions = AvroPredictions() if settings.output_format == "avro" else None
        self.encode_prediction = self.avro_predictions.encode if self.avro_predictions else records.encode
        self.poisoned = self.reader.poisoned
        self.states: dict[int, PartitionState] = {}
        self.timings: dict[int, Timing] = {}
        self.gaps = GapWatch()
        self._seeks: set[asyncio.Future[None]] = set()
        self.transactions = outputs.transactions
        #: when and where snapshots are made: on the loop or in a forked child
        self.writer = SnapshotWriter.for_setting(settings.snapshot_in, store, self.states.get, outputs.flush)

    @classmethod
    def from_settings(cls, settings: Settings, table: SnapshotTable, outputs: Outputs) -> Processor:
        """The worker's processor (its store fails a bad configuration at start)."""
        return cls(settings, SnapshotStore.from_settings(settings, table), outputs)

    # -- partition ownership ---------------------------------------------------------------------

    def keep_only(self, partitions: set[int]) -> None:
        """After a rebalance: forget the states of partitions this worker no longer owns."""
        for partition in set(self.states) - partitions:
            self.release(partition)
            log.info("partition %d: revoked, state released", partition)
        self.store.forget(partitions)

    def release(self, partition: int) -> None:
        """Forget the partition's state: its next owner (this worker again, perhaps) recovers it
        from its snapshot."""
        self.states.pop(partition, None)
        self.writer.cancel(partition)
        self.timings.pop(partition, None)
        self.gaps.forget(partition)
        self.poisoned.forget(partition)

    def state_for(self, partition: int) -> PartitionState:
        """The live state; recovery normally placed it, else load it as recovery would."""
        state = self.states.get(partition)
        if state is None:
            state, _ = self.state_for_recovery(partition)
        return state

    def state_for_recovery(self, partition: int) -> tuple[PartitionState, str]:
        """The newest valid state and where it came from: 'memory', 'snapshot' or 'new'.

        A state still in memory is never older than the snapshot it wrote, so it wins.
        """
        state = self.states.get(partition)
        if state is not None:
            return state, "memory"
        restored = self.store.restore(partition)
        if restored is None:
            log.info("partition %d: no usable snapshot, new %s model", partition, self.store.specs[0].name)
            state, source = self.store.fresh(partition), "new"
        else:
            state, source = restored, "snapshot"
        self.states[partition] = state
        return state, source

    def new_state(self, partition: int) -> PartitionState:
        """Replace whatever this partition had with a new model."""
        state = self.states[partition] = self.store.fresh(partition)
        return state

    # -- one fetched batch -----------------------------------------------------------------------

    async def handle_batch(
        self, tp: TP, batch: Sequence[ConsumerRecord], still_ours: Callable[[], bool]
    ) -> int | None:
        """The records of one partition from one fetch, in offset order; returns the offset of
        the last event the model has applied (None before its first), which the consumer may
        commit. With exactly_once, None: the partition's transaction commits the offsets."""
        if not still_ours():
            return None  # fetched before a rebalance: loading its state would resurrect it here
        if self.transactions is None:
            return await self._handle_records(tp, batch, still_ours, self.outputs)
        txn = self.transactions.get(tp.partition)
        if txn is None or not txn.ready:
            return None  # not claimed yet, or lost with a failed transaction: a claim positions it
        async with txn.lock:
            if txn.ready:
                await self._handle_in_transaction(txn, tp, batch, still_ours)
        return None

    async def _handle_in_transaction(
        self,
        txn: PartitionTransaction,
        tp: TP,
        batch: Sequence[ConsumerRecord],
        still_ours: Callable[[], bool],
    ) -> None:
        """The batch's outputs join the partition's transaction, which commits when it has been
        open for STREAMAPP_TRANSACTION_INTERVAL or a snapshot is due: a snapshot must never be
        ahead of the committed offset (see streamapp/transactions.py)."""
        assert self.transactions is not None
        try:
            await self._handle_records(tp, batch, still_ours, txn)
        except GapError:
            raise  # stops the worker (application.subscribe)
        except Exception as exc:  # the producer failed or was fenced: the transaction is lost
            await self.transactions.fail(txn, exc)
            return
        state = self.states.get(tp.partition)
        if state is None:
            return
        now = time.time()
        snapshot = self.writer.due(state, now)
        if not (snapshot or txn.due(self.settings.transaction_interval)):
            return
        if await self.transactions.commit(txn) and snapshot:
            await self.writer.take(state, now)

    async def _handle_records(
        self, tp: TP, batch: Sequence[ConsumerRecord], still_ours: Callable[[], bool], sink: Sink
    ) -> int | None:
        await self.decoder.prepare(batch, still_ours)
        state = self.state_for(tp.partition)
        timing = self.timings.setdefault(tp.partition, Timing())
        predictions = sink.outbox(self.settings.predictions_topic, tp.partition)
        for record in batch:
            if not still_ours():
                break  # a rebalance: the partition's next owner resumes at its model's offset
            if not await self.handle(state, timing, tp, record, predictions, sink):
                await predictions.send()
                return None  # the offset committed so far still covers what was emitted
        await predictions.send()
        return state.offset if state.runtime.positioned else None

    async def handle(
        self,
        state: PartitionState,
        timing: Timing,
        tp: TP,
        record: ConsumerRecord,
        predictions: Outbox,
        sink: Sink | None = None,
    ) -> bool:
        """One record: applied to the partition, or sent to the dead-letter topic with the reason
        (no exception escapes but the producer's: it would stop the worker, and every worker it
        moved to). False when the partition was rewound before it: the rest of its batch is stale."""
        out: Sink = self.outputs if sink is None else sink
        received = time.time()
        produced = record.timestamp / 1000 if record.timestamp else received
        message = self.read(tp, record, produced)
        outcome = state.apply(
            record.offset, message, self.decoder.time(message, produced), self._rollback_source
        )
        if isinstance(outcome, Scored):  # the common case first
            if not (outcome.replayed and out.exactly_once):
                await self._emit_prediction(timing, tp, record, predictions, outcome, received, produced)
        elif isinstance(outcome, Skipped):
            return True
        elif isinstance(outcome, Gap):
            if self.gaps.seek_to(tp, record.offset, outcome.expected):
                self._seek_back(tp, outcome.expected)
            return True
        elif isinstance(outcome, Poisoned):
            self.rewind(state, tp, record.offset, outcome.reason)
            return False
        elif isinstance(outcome, DeadLetter) and not (
            out.exactly_once and record.offset < state.runtime.replay_until
        ):
            await self._dead_letter(out, tp, record, outcome.reason)
        out.cover(record.offset)
        self.gaps.progressed(tp.partition)
        self.poisoned.spent(tp.partition, record.offset)
        if isinstance(outcome, Controlled) and outcome.rolled_back:
            state.runtime.snapshot_now = True  # recovery then starts after the rollback
        if out.exactly_once:
            return True  # snapshots wait for the transaction's commit (_handle_in_transaction)
        now = time.time()
        if self.writer.due(state, now):
            await self.writer.take(state, now)
        return True

    def read(self, tp: TP, record: ConsumerRecord, at: float) -> Message:
        """The record as the partition's message (streamapp/reading.py)."""
        return self.reader.read(tp, record, at)

    def rewind(self, state: PartitionState, tp: TP, offset: int, reason: str) -> None:
        """Put the partition back as it was before `offset`, whose record a model failed to
        learn half-way: its newest snapshot (or a new model from the first offset it ever
        applied) takes over, the consumer is moved back to it (records already fetched are gaps
        to the offset guard), and the replay re-applies the log up to `offset` exactly
        (predictions marked replayed), then dead-letters that record with `reason`."""
        partition = state.partition
        self.poisoned.mark(partition, offset, reason)
        self.writer.cancel(partition)  # a snapshot of the state that failed: not wanted
        restored, source = self.store.rewound(state, offset)
        self.states[partition] = restored
        self.gaps.sought(partition)  # the seek the gaps would ask for
        self._seek_back(tp, restored.offset + 1)
        log.error(
            "partition %d: MODEL ERROR at offset %d (%s): rewound to %s at offset %d; replaying "
            "the log up to it, then dead-lettering it",
            partition,
            offset,
            reason,
            f"snapshot #{restored.runtime.snapshot_seq}" if source == "snapshot" else "a new model",
            restored.offset,
        )

    async def _emit_prediction(
        self,
        timing: Timing,
        tp: TP,
        record: ConsumerRecord,
        predictions: Outbox,
        scored: Scored,
        received: float,
        produced: float,
    ) -> None:
        times = Times(produced, received, time.time())
        threshold = self.settings.anomaly_threshold
        prediction = prediction_record(scored, record.key, tp.partition, record.offset, times, threshold)
        await predictions.add(record.key, self.encode_prediction(prediction))
        timing.observe(scored, times, prediction.get("alert", False))

    async def _dead_letter(self, sink: Sink, tp: TP, record: ConsumerRecord, reason: str) -> None:
        topic, offset = self.reader.origin(tp, record)  # a copy's: where the record was written
        headers = records.deadletter_headers(reason, topic, tp.partition, offset)
        # Kafka takes a record with neither key nor value; aiokafka refuses to write one.
        value = b"" if record.key is None and record.value is None else record.value
        await sink.emit(self.settings.deadletter_topic, tp.partition, record.key, value, headers)
        log.warning("partition %d offset %d: dead letter: %s", tp.partition, record.offset, reason)

    def _seek_back(self, tp: TP, offset: int) -> None:
        """Move the partition's consumer back to `offset`, in the background: the processor
        must keep draining the events fetched before the seek."""
        task = asyncio.ensure_future(self.outputs.seek(tp, offset))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    async def close(self) -> None:
        """The worker stops: a snapshot still being made is abandoned (recovery is exact from
        the one before)."""
        await self.writer.close()
