"""The work on a partition's fetched events: decode, guard the offset, predict, learn, emit,
snapshot.

It reads like the data flow of the design: a bad event goes to the dead-letter topic, a good one
is scored by its partition's model, the prediction is emitted, and every N events or T seconds
the partition state is written to the snapshot table, in that partition's changelog partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import records, snapshot
from streamapp.histogram import Histogram
from streamapp.models import ModelSpec
from streamapp.outbox import Outbox
from streamapp.records import BadEvent, LateLabel
from streamapp.settings import Settings
from streamapp.state import PartitionState

log = logging.getLogger(__name__)

RESEEK_EVERY = 2.0  # seconds between two seeks back to a partition's next expected offset
MAX_RESEEKS = 5
FLUSH_SNAPSHOTS_OVER = 4 * 1024 * 1024


class GapError(RuntimeError):
    """A partition's log lacks offsets the model needs; learning on would not be exact."""


#: (topic, partition, key, value, headers): hands one record to the producer
Emit = Callable[[str, int, bytes | None, bytes | None, list[tuple[str, bytes]] | None], Awaitable[None]]


def snapshot_key(partition: int) -> str:
    return f"p{partition}"


@dataclass
class Timing:
    """One partition's latency histograms and output count since this worker took it."""

    predict: Histogram = field(default_factory=Histogram)
    learn: Histogram = field(default_factory=Histogram)
    end_to_end: Histogram = field(default_factory=Histogram)  # produced -> prediction handed over
    predictions: int = 0
    alerts: int = 0  # anomaly scores at or above STREAMAPP_ANOMALY_THRESHOLD


class Learner:
    """Owns the in-memory partition states of one worker; the web views only read them."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        snapshots: Mapping[str, bytes],
        save: Callable[[TP, str, bytes], None],
        emit: Emit,
        outbox: Callable[[str, int], Outbox],
        seek: Callable[[TP, int], Awaitable[None]],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.spec = spec
        #: the snapshot table, read at recovery
        self.snapshots = snapshots
        #: writes a snapshot to the table, in the partition's changelog partition
        self.save = save
        #: hands a record to the producer (delivery is checked asynchronously): dead letters
        self.emit = emit
        #: batches the records of one topic partition: predictions
        self.outbox = outbox
        #: moves the consumer of one partition back to an offset
        self.seek = seek
        #: waits until everything produced so far is acknowledged by the broker
        self.flush = flush
        self.states: dict[int, PartitionState] = {}
        self.timings: dict[int, Timing] = {}
        self._seeks: set[asyncio.Future[None]] = set()

    # -- partition ownership ---------------------------------------------------------------------

    def keep_only(self, partitions: set[int]) -> None:
        """After a rebalance: forget the states of partitions this worker no longer owns."""
        for partition in set(self.states) - partitions:
            del self.states[partition]
            self.timings.pop(partition, None)
            log.info("partition %d: revoked, state released", partition)

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
        state, source = self._restore(partition)
        self.states[partition] = state
        return state, source

    def new_state(self, partition: int) -> PartitionState:
        """Replace whatever this partition had with a new model."""
        state = self.states[partition] = self._fresh(partition)
        return state

    def _fresh(self, partition: int) -> PartitionState:
        state = PartitionState(partition, self.spec, self.settings.pending_labels_max)
        state.drift_policy = self.settings.drift_policy
        return state

    def _restore(self, partition: int) -> tuple[PartitionState, str]:
        blob = self.snapshots.get(snapshot_key(partition))
        fresh = self._fresh(partition)
        if blob is None:
            log.info("partition %d: no snapshot, new %s model", partition, self.spec.name)
            return fresh, "new"
        try:
            header, state = snapshot.decode(blob)
        except snapshot.SnapshotError as exc:
            log.error("partition %d: SNAPSHOT UNUSABLE, starting a new model: %s", partition, exc)
            return fresh, "new"
        if state.model_name != self.spec.name:
            log.error(
                "partition %d: snapshot holds model %r but STREAMAPP_MODEL is %r; starting a new model",
                partition,
                state.model_name,
                self.spec.name,
            )
            return fresh, "new"
        state.restored(header.seq, header.offset, len(blob), header.created)
        state.pending_max = self.settings.pending_labels_max
        state.drift_policy = self.settings.drift_policy
        log.info(
            "partition %d: restored snapshot #%d at offset %d (%d bytes, %d events learned)",
            partition,
            header.seq,
            header.offset,
            len(blob),
            state.events_learned,
        )
        return state, "snapshot"

    # -- one event -------------------------------------------------------------------------------

    async def handle_batch(
        self, tp: TP, batch: Sequence[ConsumerRecord], still_ours: Callable[[], bool]
    ) -> int | None:
        """The records of one partition from one fetch, in offset order; returns the offset of
        the last event the model has applied (None before its first), which may be committed."""
        if not still_ours():
            return None  # fetched before a rebalance: loading its state would resurrect it here
        state = self.state_for(tp.partition)
        timing = self.timings.setdefault(tp.partition, Timing())
        predictions = self.outbox(self.settings.predictions_topic, tp.partition)
        for record in batch:
            if not still_ours():
                break  # a rebalance: the partition's next owner resumes at its model's offset
            await self.handle(state, timing, tp, record, predictions)
        await predictions.send()
        return state.offset if state.positioned else None

    async def handle(
        self, state: PartitionState, timing: Timing, tp: TP, record: ConsumerRecord, predictions: Outbox
    ) -> None:
        offset = record.offset
        received = time.time()
        verdict = state.admit(offset)
        if verdict != "apply":
            if verdict == "gap":
                self._on_gap(state, tp, offset)
            return
        state.reseeks_without_progress = 0
        replayed = state.replaying(offset)
        try:
            decoded = records.decode(record.value, self.settings.max_event_bytes)
        except BadEvent as exc:
            await self._dead_letter(state, tp, record, str(exc))
        else:
            if isinstance(decoded, LateLabel):
                state.apply_label(decoded, offset)
            else:
                try:
                    applied = state.apply_event(decoded, offset)
                except Exception as exc:  # the model refused these features: a dead letter too
                    reason = f"model error: {type(exc).__name__}: {exc}"
                    await self._dead_letter(state, tp, record, reason)
                    log.exception("partition %d offset %d: the model raised", tp.partition, offset)
                    return
                sent_at = time.time()
                produced = record.timestamp / 1000 if record.timestamp else received
                key = record.key
                prediction = {
                    "id": decoded.id,
                    "key": key.decode("utf-8", "replace") if key else None,
                    "partition": tp.partition,
                    "offset": offset,
                    "model": state.version(),
                    **applied.prediction,
                    "learned": applied.learned,
                    "replayed": replayed,
                    "timings": {
                        "message_latency_s": received - produced,
                        "predict_s": applied.predict_s,
                        "learn_s": applied.learn_s,
                        "end_to_end_s": sent_at - produced,
                    },
                }
                score = applied.prediction.get("score")
                if score is not None:  # anomaly models: the alert is the decision, the score its why
                    prediction["alert"] = alert = score >= self.settings.anomaly_threshold
                    timing.alerts += alert
                await predictions.add(key, records.encode(prediction))
                timing.predict.observe(applied.predict_s)
                timing.learn.observe(applied.learn_s)
                timing.end_to_end.observe(sent_at - produced)
                timing.predictions += 1
        await self._maybe_snapshot(state, tp)

    async def _dead_letter(self, state: PartitionState, tp: TP, record: ConsumerRecord, reason: str) -> None:
        state.deadletters += 1
        state.advance(record.offset)
        headers = records.deadletter_headers(reason, tp.topic, tp.partition, record.offset)
        await self.emit(self.settings.deadletter_topic, tp.partition, record.key, record.value, headers)
        log.warning("partition %d offset %d: dead letter: %s", tp.partition, record.offset, reason)

    def _on_gap(self, state: PartitionState, tp: TP, offset: int) -> None:
        """Offsets were skipped (Faust can drop events fetched around a rebalance): go back for
        them, at most every RESEEK_EVERY seconds; give up loudly after MAX_RESEEKS tries."""
        now = time.monotonic()
        if now - state.reseeked_at < RESEEK_EVERY:
            return
        expected = state.offset + 1
        if state.reseeks_without_progress >= MAX_RESEEKS:
            raise GapError(
                f"partition {tp.partition}: offsets {expected}..{offset - 1} of {tp.topic} never "
                f"arrive after {MAX_RESEEKS} seeks: is the topic compacted or written by a "
                "transactional producer? streamapp needs every offset of the source log"
            )
        state.reseeked_at = now
        state.reseeks_without_progress += 1
        log.error(
            "partition %d: GAP: offset %d arrived, %d expected; not learning across it, seeking back",
            tp.partition,
            offset,
            expected,
        )
        # In the background: the agent must keep draining the events fetched before the seek.
        task = asyncio.ensure_future(self.seek(tp, expected))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    async def _maybe_snapshot(self, state: PartitionState, tp: TP) -> None:
        now = time.time()
        if not state.snapshot_due(
            self.settings.snapshot_every_events, self.settings.snapshot_every_seconds, now
        ):
            return
        try:
            blob = snapshot.encode(state, self.settings.max_snapshot_bytes)
        except snapshot.SnapshotError as exc:
            # The model keeps learning in memory; recovery will replay from the last good snapshot.
            state.snapshot_failed(now)
            log.error("partition %d: SNAPSHOT NOT WRITTEN: %s", state.partition, exc)
            return
        self.save(tp, snapshot_key(state.partition), blob)
        state.snapshot_taken(len(blob), now)
        if len(blob) > FLUSH_SNAPSHOTS_OVER:
            # One large snapshot in flight at a time: the producer packs the records of every
            # partition bound for one broker into one request, and two 60 MB snapshots would
            # pass the broker's socket.request.max.bytes (100 MiB by default).
            await self.flush()
