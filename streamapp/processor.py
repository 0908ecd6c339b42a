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

from streamapp import control, records, snapshot
from streamapp.histogram import Histogram
from streamapp.models import ModelSpec
from streamapp.outbox import Outbox
from streamapp.partition import Applied, LearnFailed, PartitionState
from streamapp.records import BadEvent, Control, Event, LateLabel, Limits
from streamapp.settings import Settings
from streamapp.signing import Signer

log = logging.getLogger(__name__)

RESEEK_EVERY = 2.0  # seconds between two seeks back to a partition's next expected offset
MAX_RESEEKS = 5
FLUSH_SNAPSHOTS_OVER = 4 * 1024 * 1024


class GapError(RuntimeError):
    """A partition's log lacks offsets the model needs; learning on would not be exact."""


class Rewound(Exception):
    """The partition was put back before the record being handled: stop its batch here."""


#: (topic, partition, key, value, headers): hands one record to the producer
Emit = Callable[[str, int, bytes | None, bytes | None, list[tuple[str, bytes]] | None], Awaitable[None]]


def snapshot_key(partition: int, seq: int, kept: int) -> str:
    """Snapshots of a partition take turns in `kept` slots: the newest valid one is recovered
    from, and the others are what a rollback can return to."""
    return f"p{partition}/{seq % kept}"


@dataclass
class Timing:
    """One partition's latency histograms and output count since this worker took it."""

    predict: Histogram = field(default_factory=Histogram)
    learn: Histogram = field(default_factory=Histogram)
    end_to_end: Histogram = field(default_factory=Histogram)  # produced -> prediction handed over
    predictions: int = 0
    alerts: int = 0  # anomaly scores at or above STREAMAPP_ANOMALY_THRESHOLD


class Processor:
    """Owns the in-memory partition states of one worker; the web views only read them."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        challengers: Sequence[ModelSpec],
        snapshots: Mapping[str, bytes],
        save: Callable[[TP, str, bytes], None],
        emit: Emit,
        outbox: Callable[[str, int], Outbox],
        seek: Callable[[TP, int], Awaitable[None]],
        flush: Callable[[], Awaitable[None]],
        signer: Signer,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.challengers = challengers
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
        #: signs and verifies snapshots and control events (STREAMAPP_SIGNING_KEY)
        self.signer = signer
        self.limits = Limits.from_settings(settings)
        self.states: dict[int, PartitionState] = {}
        #: {partition: {offset: reason}}: records a model failed to learn, dead-lettered when the
        #: replay after a rewind reaches them (see rewind)
        self.poisoned: dict[int, dict[int, str]] = {}
        self.timings: dict[int, Timing] = {}
        #: verified headers of each partition's kept snapshots, by table key: listings and the
        #: rollback check read these instead of the values (up to 64 MiB each)
        self._headers: dict[int, dict[str, snapshot.Header]] = {}
        #: snapshots refused (unsigned, forged, another partition's, a forbidden global) by
        #: partition, since this worker started
        self.snapshots_refused: dict[int, int] = {}
        #: packages of configured model factories, whose classes a snapshot may hold
        self._packages = snapshot.factory_packages([spec.name, *(c.name for c in challengers)])
        self._seeks: set[asyncio.Future[None]] = set()

    # -- partition ownership ---------------------------------------------------------------------

    def keep_only(self, partitions: set[int]) -> None:
        """After a rebalance: forget the states of partitions this worker no longer owns."""
        for partition in set(self.states) - partitions:
            del self.states[partition]
            self.timings.pop(partition, None)
            self.poisoned.pop(partition, None)  # the next owner finds them again, in its replay
            log.info("partition %d: revoked, state released", partition)
        for partition in set(self._headers) - partitions:
            del self._headers[partition]  # its next owner writes the table now

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
        settings = self.settings
        state = PartitionState(
            partition,
            self.spec,
            settings.pending_labels_max,
            self.challengers,
            settings.promote_after,
            settings.promote_margin,
        )
        state.configure(settings)
        return state

    def _refused(self, partition: int, which: str, exc: snapshot.SnapshotError) -> None:
        """Log and count a snapshot that is not trusted; recovery and rollback pass over it."""
        self.snapshots_refused[partition] = self.snapshots_refused.get(partition, 0) + 1
        log.error("partition %d: SNAPSHOT REFUSED (%s): %s", partition, which, exc)

    def kept_snapshots(self, partition: int) -> list[tuple[snapshot.Header, bytes]]:
        """The partition's kept snapshots whose signature verifies for it, newest first.

        Reads every value (up to 64 MiB each): for recovery and downloads; listings use
        kept_headers. Refreshes the header cache; the refused ones are logged and counted.
        """
        # Not the one key "p{partition}" of the time before several were kept: its snapshots are
        # all unsigned, nothing ever replaces them, and each recovery would refuse them again.
        keys = [
            snapshot_key(partition, slot, self.settings.snapshots_kept)
            for slot in range(self.settings.snapshots_kept)
        ]
        found = []
        for key in keys:
            blob = self.snapshots.get(key)
            if blob is None:
                continue
            try:
                found.append((key, snapshot.verify(blob, self.signer, partition), blob))
            except snapshot.SnapshotError as exc:
                self._refused(partition, f"slot {key}", exc)
        found.sort(key=lambda found: -found[1].seq)
        self._headers[partition] = {key: header for key, header, _ in found}
        return [(header, blob) for _, header, blob in found]

    def kept_headers(self, partition: int) -> list[snapshot.Header]:
        """The headers of the partition's verified kept snapshots, newest first, from memory
        (read once from the table, then kept up to date by this worker's own writes)."""
        if partition not in self._headers:
            self.kept_snapshots(partition)
        return sorted(self._headers[partition].values(), key=lambda header: -header.seq)

    def load_snapshot(self, partition: int, blob: bytes) -> tuple[snapshot.Header, PartitionState]:
        """A kept snapshot of `partition` as a state fitted to the configured models; raises
        SnapshotError (SnapshotRefused when it is not trusted: nothing of it was unpickled)."""
        header, state = snapshot.decode(blob, self.signer, partition, self._packages)
        state.restored(header.seq, header.offset, len(blob), header.created)
        state.align((self.spec, *self.challengers), self.settings.promote_after, self.settings.promote_margin)
        state.configure(self.settings)
        return header, state

    def _restore(self, partition: int) -> tuple[PartitionState, str]:
        """The newest kept snapshot that verifies and decodes (an older one when the newest is
        damaged or refused: replay from its offset is just as exact), or a new model."""
        configured = {self.spec.name, *(c.name for c in self.challengers)}
        for header, blob in self.kept_snapshots(partition):
            if not configured & set(header.models):
                log.error(
                    "partition %d: snapshot #%d holds models %s, none of them configured "
                    "(STREAMAPP_MODEL, STREAMAPP_CHALLENGERS); starting a new model",
                    partition,
                    header.seq,
                    header.models,
                )
                break
            try:
                _, state = self.load_snapshot(partition, blob)
            except snapshot.SnapshotRefused as exc:
                self._refused(partition, f"#{header.seq}", exc)
                continue
            except snapshot.SnapshotError as exc:
                log.error("partition %d: SNAPSHOT #%d UNUSABLE: %s", partition, header.seq, exc)
                continue
            log.info(
                "partition %d: restored snapshot #%d at offset %d (%d bytes, %d events learned)",
                partition,
                header.seq,
                header.offset,
                len(blob),
                state.events_learned,
            )
            return state, "snapshot"
        log.info("partition %d: no usable snapshot, new %s model", partition, self.spec.name)
        return self._fresh(partition), "new"

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
            try:
                await self.handle(state, timing, tp, record, predictions)
            except Rewound:
                await predictions.send()
                return None  # the offset committed so far still covers what was emitted
        await predictions.send()
        return state.offset if state.positioned else None

    async def handle(
        self, state: PartitionState, timing: Timing, tp: TP, record: ConsumerRecord, predictions: Outbox
    ) -> None:
        """One record: applied to the partition, or sent to the dead-letter topic with the reason.

        No exception of decoding, checking, predicting or learning escapes: a message that
        fails would otherwise stop the worker, and again on every worker it moved to.
        """
        offset = record.offset
        received = time.time()
        verdict = state.admit(offset)
        if verdict != "apply":
            if verdict == "gap":
                self._on_gap(state, tp, offset)
            return
        state.reseeks_without_progress = 0
        replayed = state.replaying(offset)
        produced = record.timestamp / 1000 if record.timestamp else received
        rollbacks = state.rollbacks
        poisoned = self.poisoned.get(tp.partition)
        try:
            if poisoned and offset in poisoned:
                raise BadEvent(poisoned.pop(offset))
            scored = self._apply(state, tp, record, produced)
        except BadEvent as exc:
            await self._dead_letter(state, tp, record, str(exc))
        except LearnFailed as exc:
            log.exception("partition %d offset %d: a model raised while learning", tp.partition, offset)
            self.rewind(state, tp, offset, str(exc))
            raise Rewound from exc
        except Exception as exc:  # a model's predict_one raised: nothing was changed
            state.model_errors += 1
            log.exception("partition %d offset %d: the model raised", tp.partition, offset)
            await self._dead_letter(state, tp, record, f"model error: {type(exc).__name__}: {exc}")
        else:
            if scored is not None:
                event, applied = scored
                await self._emit_prediction(
                    state, timing, tp, record, predictions, event, applied, (received, produced, replayed)
                )
            if state.rollbacks != rollbacks:
                # Recovery then starts after the rollback, not from a replay of it.
                await self._snapshot(state, tp, time.time())
                return
        await self._maybe_snapshot(state, tp)

    def rewind(self, state: PartitionState, tp: TP, offset: int, reason: str) -> None:
        """Put the partition back as it was before `offset`, whose record a model failed to
        learn half-way: its newest snapshot (or a new model from the first offset it ever
        applied) takes over, the consumer is moved back to it (records already fetched are gaps
        to the offset guard), and the replay re-applies the log up to `offset` exactly
        (predictions marked replayed), then dead-letters that record with `reason`."""
        partition = state.partition
        self.poisoned.setdefault(partition, {})[offset] = reason
        del self.states[partition]
        restored, source = self.state_for_recovery(partition)
        if source == "new":
            restored.offset = state.first_offset - 1
            restored.first_offset = state.first_offset
        restored.positioned = True
        restored.replay_until = max(state.replay_until, offset)
        restored.model_errors = state.model_errors + 1
        restored.reseeked_at = time.monotonic()  # this seek is the one the gaps would ask for
        self._seek_back(tp, restored.offset + 1)
        log.error(
            "partition %d: MODEL ERROR at offset %d (%s): rewound to %s at offset %d; replaying "
            "the log up to it, then dead-lettering it",
            partition,
            offset,
            reason,
            f"snapshot #{restored.snapshot_seq}" if source == "snapshot" else "a new model",
            restored.offset,
        )

    def _apply(
        self, state: PartitionState, tp: TP, record: ConsumerRecord, at: float
    ) -> tuple[Event, Applied] | None:
        """Decode, check and apply one record at record time `at`; the scored event if it was
        one. Raises BadEvent (or a model's exception from predicting) before anything changes,
        and LearnFailed when a model raised half-way through learning."""
        decoded = records.decode(record.value, self.limits)
        if isinstance(decoded, LateLabel):
            state.apply_label(decoded, record.offset, at)
            return None
        if isinstance(decoded, Control):
            control.verify(self.signer, tp.partition, decoded, record.headers, at)
            self.apply_control(state, decoded, record.offset, at)
            return None
        return decoded, state.apply_event(decoded, record.offset, at)

    async def _emit_prediction(
        self,
        state: PartitionState,
        timing: Timing,
        tp: TP,
        record: ConsumerRecord,
        predictions: Outbox,
        event: Event,
        applied: Applied,
        times: tuple[float, float, bool],
    ) -> None:
        """The prediction record of a scored event, with the paper's timings."""
        received, produced, replayed = times
        sent_at = time.time()
        key = record.key
        prediction = {
            "id": event.id,
            "key": key.decode("utf-8", "replace") if key else None,
            "partition": tp.partition,
            "offset": record.offset,
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
        if applied.challengers is not None:
            prediction["challengers"] = applied.challengers
        score = applied.prediction.get("score")
        if score is not None:  # anomaly models: the alert is the decision, the score its why
            prediction["alert"] = alert = score >= self.settings.anomaly_threshold
            timing.alerts += alert
        await predictions.add(key, records.encode(prediction))
        timing.predict.observe(applied.predict_s)
        timing.learn.observe(applied.learn_s)
        timing.end_to_end.observe(sent_at - produced)
        timing.predictions += 1

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
        self._seek_back(tp, expected)

    def _seek_back(self, tp: TP, offset: int) -> None:
        """Move the partition's consumer back to `offset`, in the background: the agent must
        keep draining the events fetched before the seek."""
        task = asyncio.ensure_future(self.seek(tp, offset))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    def apply_control(self, state: PartitionState, control: Control, offset: int, at: float) -> str:
        """Apply a promotion or rollback read from the partition's log (its signature checked,
        at record time `at`); the outcome."""
        state.check_control(control)
        state.remember_control(control.id)
        if control.action == "promote":
            assert control.model is not None
            return state.promote(control.model, offset)
        wait = state.rollback_wait(at)
        if wait:
            why = f"rate-limited: next rollback allowed in {wait:.0f} s (STREAMAPP_ROLLBACK_MIN_INTERVAL)"
            return state.refuse(offset, control.describe(), why)
        assert control.seq is not None
        partition = state.partition
        kept = sorted(header.seq for header in self.kept_headers(partition))
        slot = next((k for k, h in self._headers[partition].items() if h.seq == control.seq), None)
        blob = None if slot is None else self.snapshots.get(slot)
        if blob is None:
            why = f"snapshot #{control.seq} is not kept (kept: {kept or 'none'})"
            return state.refuse(offset, control.describe(), why)
        try:
            header, older = self.load_snapshot(partition, blob)
            if header.seq != control.seq:
                raise snapshot.SnapshotError(f"its slot {slot} now holds snapshot #{header.seq}")
        except snapshot.SnapshotError as exc:
            if isinstance(exc, snapshot.SnapshotRefused):
                self._refused(partition, f"#{control.seq}, rollback", exc)
            return state.refuse(offset, control.describe(), f"snapshot #{control.seq} unusable: {exc}")
        return state.roll_back(older, control.seq, offset, at)

    async def _maybe_snapshot(self, state: PartitionState, tp: TP) -> None:
        now = time.time()
        if state.snapshot_due(self.settings.snapshot_every_events, self.settings.snapshot_every_seconds, now):
            await self._snapshot(state, tp, now)

    async def _snapshot(self, state: PartitionState, tp: TP, now: float) -> None:
        """Write the partition's state; a snapshot that cannot be made or written is counted and
        logged, never raised: the model keeps learning in memory and recovery replays from the
        last good snapshot. (Seen: Faust's table raised PartitionsMismatch while the consumer's
        metadata of a changelog created a moment before still listed no partitions.)"""
        key = snapshot_key(state.partition, state.snapshot_seq + 1, self.settings.snapshots_kept)
        try:
            blob = snapshot.encode(state, self.settings.max_snapshot_bytes, self.signer)
            self.save(tp, key, blob)
        except Exception as exc:  # a SnapshotError (too large), a model that cannot pickle, Faust
            state.snapshot_failed(now)
            log.error("partition %d: SNAPSHOT NOT WRITTEN: %s: %s", state.partition, type(exc).__name__, exc)
            return
        headers = self._headers.get(state.partition)
        if headers is not None:  # else the first listing reads the table, this one included
            headers[key] = snapshot.read_header(blob)  # its own, just encoded
        state.snapshot_taken(len(blob), now)
        if len(blob) > FLUSH_SNAPSHOTS_OVER:
            # One large snapshot in flight at a time: the producer packs the records of every
            # partition bound for one broker into one request, and two 60 MB snapshots would
            # pass the broker's socket.request.max.bytes (100 MiB by default).
            await self.flush()
