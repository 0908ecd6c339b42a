"""The agent's work for one event: decode, guard the offset, predict, learn, emit, snapshot.

It reads like the data flow of the design: a bad event goes to the dead-letter topic, a good one
is scored by its partition's model, the prediction is emitted, and every N events or T seconds
the partition state is written to the snapshot table while this partition's event is current
(Faust writes the changelog record to the event's own partition).
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any, Protocol

from faust.types import EventT, TopicT

from streamapp import records, snapshot
from streamapp.models import ModelSpec
from streamapp.records import BadEvent, LateLabel
from streamapp.settings import Settings
from streamapp.state import PartitionState

log = logging.getLogger(__name__)


def snapshot_key(partition: int) -> str:
    return f"p{partition}"


class Sender(Protocol):
    async def send(self, *, key: Any = ..., value: Any = ..., headers: Any = ...) -> Any: ...


class Learner:
    """Owns the in-memory partition states of one worker; the web views only read them."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        snapshots: MutableMapping[str, bytes],
        predictions: TopicT | Sender,
        deadletters: TopicT | Sender,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.snapshots = snapshots
        self.predictions = predictions
        self.deadletters = deadletters
        self.states: dict[int, PartitionState] = {}
        self.started = time.time()

    # -- partition ownership ---------------------------------------------------------------------

    def keep_only(self, partitions: set[int]) -> None:
        """After a rebalance: forget the states of partitions this worker no longer owns."""
        for partition in set(self.states) - partitions:
            del self.states[partition]
            log.info("partition %d: revoked, state released", partition)

    def state_for(self, partition: int) -> PartitionState:
        """The live state, else the latest snapshot (needs this partition's event context)."""
        state = self.states.get(partition)
        if state is None:
            state = self._restore(partition)
            self.states[partition] = state
        return state

    def _restore(self, partition: int) -> PartitionState:
        blob = self.snapshots.get(snapshot_key(partition))
        fresh = PartitionState(partition, self.spec, self.settings.pending_labels_max)
        if blob is None:
            log.info("partition %d: no snapshot, new %s model", partition, self.spec.name)
            return fresh
        try:
            header, state = snapshot.decode(blob)
        except snapshot.SnapshotError as exc:
            log.error("partition %d: SNAPSHOT UNUSABLE, starting a new model: %s", partition, exc)
            return fresh
        if state.model_name != self.spec.name:
            log.error(
                "partition %d: snapshot holds model %r but STREAMAPP_MODEL is %r; starting a new model",
                partition,
                state.model_name,
                self.spec.name,
            )
            return fresh
        state.restored(header.seq, header.offset, len(blob), header.created)
        state.pending_max = self.settings.pending_labels_max
        log.info(
            "partition %d: restored snapshot #%d at offset %d (%d bytes, %d events learned)",
            partition,
            header.seq,
            header.offset,
            len(blob),
            state.events_learned,
        )
        return state

    # -- one event -------------------------------------------------------------------------------

    async def handle(self, event: EventT) -> None:
        message = event.message
        partition, offset = message.partition, message.offset
        received = time.time()
        state = self.state_for(partition)
        if not state.admits(offset):
            return
        try:
            decoded = records.decode(message.value, self.settings.max_event_bytes)
        except BadEvent as exc:
            state.deadletters += 1
            state.advance(offset)
            await self.deadletters.send(
                key=message.key,
                value=message.value,
                headers=records.deadletter_headers(str(exc), message.topic, partition, offset),
            )
            log.warning("partition %d offset %d: dead letter: %s", partition, offset, exc)
        else:
            if isinstance(decoded, LateLabel):
                state.apply_label(decoded, offset)
            else:
                applied = state.apply_event(decoded, offset)
                sent_at = time.time()
                produced = message.timestamp or received
                record = {
                    "id": decoded.id,
                    "key": message.key.decode("utf-8", "replace") if message.key else None,
                    "partition": partition,
                    "offset": offset,
                    "model": state.version(),
                    **applied.prediction,
                    "learned": applied.learned,
                    "replayed": False,
                    "timings": {
                        "message_latency_s": received - produced,
                        "predict_s": applied.predict_s,
                        "learn_s": applied.learn_s,
                        "end_to_end_s": sent_at - produced,
                    },
                }
                await self.predictions.send(key=message.key, value=records.encode(record))
        self._maybe_snapshot(state)

    def _maybe_snapshot(self, state: PartitionState) -> None:
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
        self.snapshots[snapshot_key(state.partition)] = blob
        state.snapshot_taken(len(blob), now)

    def summary(self) -> dict[str, Any]:
        now = time.time()
        return {
            "started": self.started,
            "partitions": [self.states[p].summary(now) for p in sorted(self.states)],
        }
