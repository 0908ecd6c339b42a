"""The state of one partition: its model, metrics, counters, waiting events and applied offset.

Everything a partition's model does is a deterministic function of that partition's log, applied
once and in offset order; this class is that function, free of Kafka so it can be tested against
River directly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from river import base, compose

from streamapp.drift import DriftMonitor
from streamapp.metrics import PrequentialMetrics
from streamapp.models import ModelSpec, describe
from streamapp.records import Event, Feature, LateLabel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one event produced, for the prediction record."""

    prediction: dict[str, Any]
    learned: bool
    predict_s: float
    learn_s: float


def _predicts_class_from_proba(model: base.Estimator) -> bool:
    """True when predict_one is River's default argmax of predict_proba_one (saves a second pass)."""
    last: Any = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return type(last).predict_one is base.Classifier.predict_one


def snapshot_spread(partition: int, seq: int) -> float:
    """A factor in [0.75, 1.25) on the snapshot interval, different for each partition and each
    snapshot: partitions fed at one rate would otherwise all snapshot in the same fetched batch,
    and every event behind that batch would wait for all of them."""
    return 0.75 + 0.5 * ((partition * 0.6180339887 + seq * 0.7548776662) % 1.0)


class PartitionState:
    """One partition's live model; pickled whole into each snapshot."""

    # Fields that start at a constant live here, not in __init__: an unpickled state from an older
    # version finds the ones it lacks, as missing instance attributes are looked up on the class.
    snapshot_errors = 0
    replay_until = 0  # offsets below it were scored by an earlier owner: their predictions replay
    events_replayed = 0
    events_lost_to_retention = 0
    recovered_at = 0.0
    recovered_from = ""
    recovery_committed: int | None = None
    positioned = False  # the next offset to expect is known (offset + 1)
    reseeked_at = 0.0  # monotonic time of the last seek back over a gap
    reseeks_without_progress = 0
    created = 0.0  # wall clock at which this model was built
    drift_policy = "none"  # "reset": a new model with the same parameters on each detected drift
    model_resets = 0

    def __init__(self, partition: int, spec: ModelSpec, pending_max: int) -> None:
        self.partition = partition
        self.model_name = spec.name
        self.task = spec.task
        self.model = spec.build()
        self.model_class = describe(self.model)
        self.metrics = PrequentialMetrics(spec.task)
        self.drift = DriftMonitor(spec.task)
        self.pending_max = pending_max
        #: features and prediction of events still waiting for their label, oldest first
        self.pending: OrderedDict[str, tuple[dict[str, Feature] | None, dict[str, Any]]] = OrderedDict()
        self.offset = -1  # last source offset applied; -1 before the first event
        self.events_seen = 0
        self.events_learned = 0
        self.labels_late = 0
        self.labels_unknown = 0
        self.pending_evicted = 0
        self.deadletters = 0
        self.gaps = 0
        self.replays_skipped = 0
        self.snapshot_seq = 0
        self.snapshot_offset = -1
        self.snapshot_bytes = 0
        self.snapshot_at = 0.0  # wall clock of the last snapshot
        self.events_since_snapshot = 0
        self.created = time.time()
        self._class_from_proba = spec.task in ("binary", "multiclass") and _predicts_class_from_proba(
            self.model
        )

    # -- offsets ---------------------------------------------------------------------------------

    def admit(self, offset: int) -> str:
        """The offset guard: 'apply' the next offset, skip a 'replay', refuse a 'gap'.

        A model never learns across a gap: the offsets in between would be lost to it for good.
        Before its first event a new state knows where its log starts only once recovery has
        positioned it; until then any first offset is accepted.
        """
        if offset <= self.offset:
            self.replays_skipped += 1
            return "replay"
        if self.positioned and offset != self.offset + 1:
            self.gaps += 1
            return "gap"
        self.positioned = True
        return "apply"

    def replaying(self, offset: int) -> bool:
        """True for an event an earlier owner already scored (counted once per event)."""
        if offset < self.replay_until:
            self.events_replayed += 1
            return True
        return False

    def recovered(self, now: float, source: str, committed: int | None, resume: int) -> None:
        """Bookkeeping after a rebalance placed this partition here, resuming at `resume`."""
        self.recovered_at = now
        self.recovered_from = source
        self.recovery_committed = committed
        self.replay_until = max(committed or 0, resume)
        self.offset = resume - 1
        self.positioned = True

    def lost_to_retention(self, earliest: int, lost: int) -> None:
        """The log lost the events before `earliest` that the model had not learned: skip them."""
        self.events_lost_to_retention += lost
        self.offset = earliest - 1

    def advance(self, offset: int) -> None:
        self.offset = offset
        self.events_since_snapshot += 1

    # -- learning --------------------------------------------------------------------------------

    def predict(self, x: dict[str, Feature]) -> dict[str, Any]:
        """Score without learning: {'class', 'proba'} | {'value'} | {'score'} by task."""
        model: Any = self.model
        if self.task in ("binary", "multiclass"):
            proba = model.predict_proba_one(x)
            if self._class_from_proba:
                label = max(proba, key=proba.get) if proba else None
            else:
                label = model.predict_one(x)
            return {"class": label, "proba": proba}
        if self.task == "regression":
            return {"value": model.predict_one(x)}
        return {"score": model.score_one(x)}

    def apply_event(self, event: Event, offset: int) -> Applied:
        """Predict, then learn if the label came along (anomaly models learn every event)."""
        t0 = time.perf_counter()
        prediction = self.predict(event.x)
        t1 = time.perf_counter()
        learned = False
        model: Any = self.model
        if self.task == "anomaly":
            model.learn_one(event.x)
            learned = True
            if event.y is not None:
                self._score(event.y, prediction, offset)
            elif self.pending_max:
                self._wait_for_label(event.id, None, prediction)
        elif event.y is not None:
            self._score(event.y, prediction, offset)
            model = self.model  # a drift may just have replaced it
            model.learn_one(event.x, event.y)
            learned = True
        elif self.pending_max:
            self._wait_for_label(event.id, event.x, prediction)
        t2 = time.perf_counter()
        self.events_seen += 1
        self.events_learned += learned
        self.advance(offset)
        return Applied(prediction, learned, t1 - t0, t2 - t1)

    def apply_label(self, label: LateLabel, offset: int) -> bool:
        """Learn from a late label with the features and prediction kept at scoring time.

        This is River's progressive validation with delay: the metric sees the prediction made
        before the label was known. A label for an id that is not waiting is only counted.
        """
        entry = self.pending.pop(label.id, None)
        self.advance(offset)
        if entry is None:
            self.labels_unknown += 1
            return False
        x, prediction = entry
        self._score(label.y, prediction, offset)
        if x is not None:
            model: Any = self.model
            model.learn_one(x, label.y)
            self.events_learned += 1
        self.labels_late += 1
        return True

    def _score(self, y_true: Any, prediction: dict[str, Any], offset: int) -> None:
        """A label meets its prediction: the metrics and the drift detector see it together."""
        self.metrics.update(y_true, prediction)
        if self.drift.update(y_true, prediction, offset):
            log.warning("partition %d: DRIFT detected at offset %d (ADWIN)", self.partition, offset)
            if self.drift_policy == "reset":
                # River's idiom: the fresh model learns the event that completed the detection.
                self.model = self.model.clone()
                self.model_resets += 1

    def _wait_for_label(
        self, event_id: str, x: dict[str, Feature] | None, prediction: dict[str, Any]
    ) -> None:
        self.pending[event_id] = (x, prediction)
        self.pending.move_to_end(event_id)
        while len(self.pending) > self.pending_max:
            self.pending.popitem(last=False)
            self.pending_evicted += 1

    # -- snapshots -------------------------------------------------------------------------------

    def snapshot_due(self, every_events: int, every_seconds: float, now: float) -> bool:
        """After about `every_events` events or `every_seconds` seconds (see snapshot_spread).

        A new model's first interval starts when it is built, not at its first event: every
        partition of a starting worker would otherwise snapshot (and open its RocksDB) at once.
        """
        if self.events_since_snapshot == 0:
            return False
        spread = snapshot_spread(self.partition, self.snapshot_seq)
        since = self.snapshot_at or self.created
        return (
            self.events_since_snapshot >= round(every_events * spread)
            or now - since >= every_seconds * spread
        )

    def snapshot_taken(self, size: int, now: float) -> None:
        self.snapshot_seq += 1
        self.snapshot_offset = self.offset
        self.snapshot_bytes = size
        self.snapshot_at = now
        self.events_since_snapshot = 0

    def snapshot_failed(self, now: float) -> None:
        """Count it and wait a full interval before trying again, not pickle on every event."""
        self.snapshot_errors += 1
        self.snapshot_at = now
        self.events_since_snapshot = 0

    def restored(self, seq: int, offset: int, size: int, created: float) -> None:
        """Bookkeeping after loading this state from the snapshot described by the arguments."""
        self.snapshot_seq = seq
        self.snapshot_offset = offset
        self.snapshot_bytes = size
        self.snapshot_at = created
        self.events_since_snapshot = 0
        if getattr(self, "drift", None) is None:  # a snapshot from before drift detection
            self.drift = DriftMonitor(self.task)
        self.reseeked_at = 0.0  # a monotonic time of the process that wrote the snapshot
        self.reseeks_without_progress = 0

    def version(self) -> dict[str, Any]:
        """Which model made a prediction: replaying the partition to `offset` reproduces it."""
        return {"name": self.model_name, "snapshot_seq": self.snapshot_seq, "learned": self.events_learned}

    def summary(self, now: float) -> dict[str, Any]:
        """The partition as /models shows it."""
        return {
            "partition": self.partition,
            "model": self.model_name,
            "model_class": self.model_class,
            "task": self.task,
            "offset_applied": self.offset,
            "events_seen": self.events_seen,
            "events_learned": self.events_learned,
            "labels_late": self.labels_late,
            "labels_unknown": self.labels_unknown,
            "pending_labels": len(self.pending),
            "pending_evicted": self.pending_evicted,
            "deadletters": self.deadletters,
            "gaps": self.gaps,
            "replays_skipped": self.replays_skipped,
            "events_replayed": self.events_replayed,
            "events_lost_to_retention": self.events_lost_to_retention,
            "recovery": {
                "time": self.recovered_at or None,
                "from": self.recovered_from or None,
                "committed": self.recovery_committed,
                "replay_until": self.replay_until,
            },
            "metrics": self.metrics.values(),
            "drift": {**self.drift.summary(), "policy": self.drift_policy, "model_resets": self.model_resets},
            "snapshot": {
                "seq": self.snapshot_seq,
                "offset": self.snapshot_offset,
                "bytes": self.snapshot_bytes,
                "time": self.snapshot_at or None,
                "age_s": round(now - self.snapshot_at, 3) if self.snapshot_at else None,
                "errors": self.snapshot_errors,
            },
        }
