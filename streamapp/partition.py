"""The state of one partition: its model, metrics, counters, waiting events and applied offset.

Everything a partition's model does is a deterministic function of that partition's log, applied
once and in offset order; this class is that function, free of Kafka so it can be tested against
River directly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamapp.contenders import Contender, better_by
from streamapp.drift import DriftMonitor
from streamapp.metrics import PrequentialMetrics
from streamapp.models import ModelSpec
from streamapp.records import BadEvent, Control, Event, Feature, Label, LateLabel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one event produced, for the prediction record."""

    prediction: dict[str, Any]  # the champion's
    learned: bool
    predict_s: float
    learn_s: float
    challengers: dict[str, dict[str, Any]] | None  # their shadow predictions, by model name


#: per contender, the prediction it made for an event (None: it joined the partition later)
Predictions = Sequence[dict[str, Any] | None]
#: an event waiting for its label: features (None for anomaly models, which learned them),
#: predictions, the record time (seconds) it arrived at, and its size in bytes
Waiting = tuple[dict[str, Feature] | None, Predictions, float, int]
KEEP_CHANGES = 20  # promotions and rollbacks kept in the partition's audit trail
KEEP_CONTROL_IDS = 1000  # ids of applied control events: a copy of one is refused
#: the labels each task learns; the first label learned fixes the kind for the partition
LABEL_KINDS = {
    "binary": ("bool", "int"),
    "anomaly": ("bool", "int"),
    "multiclass": ("bool", "int", "str"),
    "regression": ("int", "float"),
}


class LearnFailed(Exception):
    """A model raised while learning, after every check passed: the partition's state may be
    half-changed, so it must be put back as it was before this offset (Processor.rewind)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"model error: {type(cause).__name__}: {cause}")


def label_kind(y: Label) -> str:
    return "bool" if isinstance(y, bool) else type(y).__name__


def feature_kind(value: Feature) -> str:
    """What a model does with a value: strings are categories, everything else a number."""
    return "string" if isinstance(value, str) else "number"


def snapshot_spread(partition: int, seq: int) -> float:
    """A factor in [0.75, 1.25) on the snapshot interval, different for each partition and each
    snapshot: partitions fed at one rate would otherwise all snapshot in the same fetched batch,
    and every event behind that batch would wait for all of them."""
    return 0.75 + 0.5 * ((partition * 0.6180339887 + seq * 0.7548776662) % 1.0)


def request_record(offset: int, request: str, outcome: str) -> dict[str, Any]:
    """A control event's entry in the partition's audit trail."""
    return {"offset": offset, "request": request, "outcome": outcome, "time": time.time()}


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
    champion_index = 0  # which of the contenders' predictions is emitted
    promote_after = 0  # the promotion rule's window of labels; 0: promotion by request only
    promote_margin = 0.0
    labels_since_promotion = 0
    rollbacks = 0
    changes: Sequence[dict[str, Any]] = ()  # the last promotions and rollbacks, oldest first
    pending_max_age = 0.0  # seconds of record time an event waits for its label; 0: no limit
    pending_expired = 0
    pending_max_bytes = 0  # bytes of the events waiting for their label; 0: no limit
    pending_bytes = 0
    #: what the partition has learned so far, which later messages must agree with
    labels_kind: str | None = None  # LABEL_KINDS' name of the first label learned
    classes: frozenset[Label] = frozenset()  # multiclass: the labels learned
    max_classes = 100
    model_errors = 0  # events a model raised on after they passed every check
    rollback_min_interval = 0.0  # seconds of record time between two rollbacks
    last_rollback_at = 0.0  # record time of the last rollback
    control_ids: Sequence[str] = ()  # ids of the last KEEP_CONTROL_IDS control events applied
    first_offset = -1  # the first offset this model (through all its snapshots) applied

    def __init__(
        self,
        partition: int,
        spec: ModelSpec,
        pending_max: int,
        challengers: Sequence[ModelSpec] = (),
        promote_after: int = 0,
        promote_margin: float = 0.0,
    ) -> None:
        self.partition = partition
        self.task = spec.task
        self.promote_after = promote_after
        self.promote_margin = promote_margin
        #: the champion first (until a promotion), then the challengers, in configured order
        self.contenders = [Contender(s, promote_after) for s in (spec, *challengers)]
        self.pending_max = pending_max
        #: features, predictions and record time of events waiting for their label, oldest first
        self.pending: OrderedDict[str, Waiting] = OrderedDict()
        self.offset = -1  # last source offset applied; -1 before the first event
        self.events_seen = 0
        self.events_learned = 0
        self.labels_late = 0
        self.labels_unknown = 0
        self.pending_evicted = 0
        self.feature_kinds: dict[str, str] = {}  # name -> "number" | "string", as first seen
        self.deadletters = 0
        self.gaps = 0
        self.replays_skipped = 0
        self.snapshot_seq = 0
        self.snapshot_offset = -1
        self.snapshot_bytes = 0
        self.snapshot_at = 0.0  # wall clock of the last snapshot
        self.events_since_snapshot = 0
        self.created = time.time()

    # -- the models ------------------------------------------------------------------------------

    @property
    def champion(self) -> Contender:
        return self.contenders[self.champion_index]

    @property
    def model(self) -> Any:
        return self.champion.model

    @property
    def model_name(self) -> str:
        return self.champion.name

    @property
    def metrics(self) -> PrequentialMetrics:
        return self.champion.metrics

    @property
    def drift(self) -> DriftMonitor:
        return self.champion.drift

    def names(self) -> list[str]:
        return [c.name for c in self.contenders]

    def align(self, specs: Sequence[ModelSpec], window: int, margin: float) -> None:
        """Fit a restored state to the configured models: keep those still configured (with their
        history), start the new ones here, drop the others. The champion stays champion if it is
        still configured, else the configured champion (the first spec) takes over."""
        self.promote_after, self.promote_margin = window, margin
        have = {c.name: (i, c) for i, c in enumerate(self.contenders)}
        for contender in self.contenders:
            contender.watch(window)
        if [s.name for s in specs] == list(have):
            return
        champion = self.champion.name
        kept = []
        for spec in specs:
            if spec.name in have:
                kept.append(have[spec.name][1])
            else:
                kept.append(Contender(spec, window))
                log.warning(
                    "partition %d: model %r joins at offset %d", self.partition, spec.name, self.offset
                )
        for name in set(have) - {s.name for s in specs}:
            log.warning("partition %d: model %r is no longer configured, dropped", self.partition, name)
        order = [have[c.name][0] if c.name in have else None for c in kept]
        for event_id, (x, predictions, at, size) in self.pending.items():
            chosen = [None if i is None else predictions[i] for i in order]
            self.pending[event_id] = (x, chosen, at, size)
        self.contenders = kept
        names = self.names()
        self.champion_index = names.index(champion) if champion in names else 0

    def configure(self, settings: Any) -> None:
        """Apply the settings that bound and steer a partition (STREAMAPP_*): at creation and
        after a restore, as configuration is not part of the log."""
        self.pending_max = settings.pending_labels_max
        self.pending_max_age = settings.pending_labels_max_age
        self.pending_max_bytes = settings.pending_labels_max_bytes
        self.drift_policy = settings.drift_policy
        self.max_classes = settings.max_classes
        self.rollback_min_interval = settings.rollback_min_interval

    # -- checks: a message that would fail changes nothing -----------------------------------------

    def check_features(self, x: dict[str, Feature]) -> bool:
        """Each feature keeps the kind (number or string) it first had in the partition: a tree
        that split on a number cannot compare it with a string, and learning fails half-way.
        True when `x` names a feature the partition has not seen (to be noted once applied)."""
        kinds = self.feature_kinds
        new = False
        for name, value in x.items():
            known = kinds.get(name)
            if known is None:
                new = True
            elif known != ("string" if isinstance(value, str) else "number"):
                raise BadEvent(
                    f"feature {name!r} is a {known} in this partition, got a {feature_kind(value)} "
                    f"({value!r:.40}); a feature must keep its kind"
                )
        return new

    def check_label(self, y: Label) -> None:
        """The label fits the task and the labels learned so far (BadEvent with the reason).

        Binary and anomaly partitions learn true/false (or 1/0: ROCAUC's positive class is True),
        regression numbers, multiclass booleans, whole numbers or strings, one kind per partition
        and at most max_classes of them; anything else would make the models raise, or worse,
        learn it and then fail on every event.
        """
        kind = label_kind(y)
        allowed = LABEL_KINDS[self.task]
        if kind not in allowed:
            hint = " (named classes need STREAMAPP_TASK=multiclass)" if self.task == "binary" else ""
            raise BadEvent(
                f"label {y!r:.40} is a {kind}; a {self.task} partition learns {' or '.join(allowed)}{hint}"
            )
        if self.task in ("binary", "anomaly") and kind == "int" and y not in (0, 1):
            raise BadEvent(f"label {y!r} of a {self.task} partition must be true/false or 1/0")
        if self.labels_kind is not None and kind != self.labels_kind and self.task != "regression":
            raise BadEvent(
                f"label {y!r:.40} is a {kind} but this partition has learned {self.labels_kind} "
                "labels; one kind per partition"
            )
        if self.task == "multiclass" and y not in self.classes and len(self.classes) >= self.max_classes:
            raise BadEvent(
                f"label {y!r:.40} would be class {len(self.classes) + 1}, over {self.max_classes} "
                "(STREAMAPP_MAX_CLASSES)"
            )

    def _learned_label(self, y: Label) -> None:
        if self.labels_kind is None:
            self.labels_kind = label_kind(y)
        if self.task == "multiclass" and y not in self.classes:
            self.classes = self.classes | {y}

    def _known_features(self, x: dict[str, Feature]) -> None:
        kinds = self.feature_kinds
        for name, value in x.items():
            if name not in kinds:
                kinds[name] = feature_kind(value)

    def check_control(self, control: Control) -> None:
        """A control event is applied once: a copy of a signed one is refused by its id."""
        if control.id in self.control_ids:
            raise BadEvent(f"control event {control.id!r} was applied already (a copy is refused)")

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
        if self.first_offset < 0:
            self.first_offset = offset
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
        """The champion's score without learning: {'class', 'proba'} | {'value'} | {'score'}."""
        return self.champion.predict(x)

    def apply_event(self, event: Event, offset: int, at: float = 0.0) -> Applied:
        """Every model predicts, then learns if the label came along (anomaly models learn every
        event); the champion's prediction is the one emitted. `at`: the record's time (seconds),
        which ages the events waiting for labels (record time, so that replay ages them alike).

        Raises BadEvent before anything changes when the event does not fit the partition; an
        exception of a model's predict_one changes nothing either (predictions are pure).
        """
        new_features = self.check_features(event.x)
        if event.y is not None:
            self.check_label(event.y)
        contenders = self.contenders
        champion = self.champion_index  # a promotion while scoring applies from the next event
        t0 = time.perf_counter()
        if len(contenders) == 1:  # the common case, without a loop's cost (~1 us of ~27 for HT)
            predictions = [contenders[0].predict(event.x)]
        else:
            predictions = [c.predict(event.x) for c in contenders]
        t1 = time.perf_counter()
        if new_features:
            self._known_features(event.x)
        try:
            learned = self._learn_event(event, predictions, offset, at)
        except Exception as exc:
            raise LearnFailed(exc) from exc
        t2 = time.perf_counter()
        self.events_seen += 1
        self.events_learned += learned
        self.advance(offset)
        shadows = None
        if len(contenders) > 1:
            shadows = {
                c.name: p
                for i, (c, p) in enumerate(zip(contenders, predictions, strict=True))
                if i != champion
            }
        return Applied(predictions[champion], learned, t1 - t0, t2 - t1, shadows)

    def _learn_event(self, event: Event, predictions: Predictions, offset: int, at: float) -> bool:
        """Metrics, drift and models meet the event (anomaly models learn every event); whether
        it was learned now."""
        if self.task == "anomaly":
            for contender in self.contenders:
                contender.learn(event.x, None)
            if event.y is not None:
                self._score(event.y, predictions, offset)
            elif self.pending_max:
                self._wait_for_label(event.id, None, predictions, at, event.size)
            return True
        if event.y is not None:
            self._score(event.y, predictions, offset)
            for contender in self.contenders:  # a drift reset may just have replaced a model
                contender.learn(event.x, event.y)
            return True
        if self.pending_max:
            self._wait_for_label(event.id, event.x, predictions, at, event.size)
        return False

    def apply_label(self, label: LateLabel, offset: int, at: float = 0.0) -> bool:
        """Learn from a late label with the features and predictions kept at scoring time.

        This is River's progressive validation with delay: the metrics see the predictions made
        before the label was known. A label for an id that is not waiting (unknown, evicted or
        expired) is only counted. A label that does not fit the partition raises BadEvent before
        anything changes: the event keeps waiting for a label that does.
        """
        self.check_label(label.y)
        self._expire(at)
        entry = self.pending.pop(label.id, None)
        self.advance(offset)
        if entry is None:
            self.labels_unknown += 1
            return False
        x, predictions, _, size = entry
        self.pending_bytes -= size
        try:
            self._score(label.y, predictions, offset)
            if x is not None:
                for contender in self.contenders:
                    contender.learn(x, label.y)
        except Exception as exc:
            raise LearnFailed(exc) from exc
        if x is not None:
            self.events_learned += 1
        self.labels_late += 1
        return True

    def _score(self, y_true: Any, predictions: Predictions, offset: int) -> None:
        """A label meets the predictions: each model's metrics and drift detector see its own."""
        self._learned_label(y_true)
        reset = self.drift_policy == "reset"
        if len(predictions) == 1:
            if predictions[0] is not None and self.contenders[0].score(y_true, predictions[0], offset, reset):
                self._drifted(self.contenders[0], offset, reset)
            return
        for contender, prediction in zip(self.contenders, predictions, strict=True):
            if prediction is not None and contender.score(y_true, prediction, offset, reset):
                self._drifted(contender, offset, reset)
        if self.promote_after and len(self.contenders) > 1:
            self.labels_since_promotion += 1
            self._promote_by_rule(offset)

    def _drifted(self, contender: Contender, offset: int, reset: bool) -> None:
        rose = contender.drift.rose
        log.warning(
            "partition %d: DRIFT detected at offset %d (ADWIN, model %r, error %s)%s",
            self.partition,
            offset,
            contender.name,
            "rose" if rose else "fell",
            ": model reset" if reset and rose else "",
        )

    def _promote_by_rule(self, offset: int) -> None:
        """The challenger ahead of the champion by the widest margin over the last N labels takes
        over; the next rule promotion waits for N more labels, so the windows hold only labels
        seen under the new champion."""
        if self.labels_since_promotion < self.promote_after:
            return
        champion = self.champion
        gains = [
            (gain, i)
            for i, c in enumerate(self.contenders)
            if i != self.champion_index and (gain := better_by(c, champion, self.promote_margin)) is not None
        ]
        if gains:
            gain, winner = max(gains)
            metric = champion.rolling_name
            rule = f"rule: {metric} better by {gain:.4f} over the last {self.promote_after} labels"
            self._promote(winner, offset, rule)

    def _promote(self, index: int, offset: int, request: str) -> str:
        old, new = self.champion.name, self.contenders[index].name
        self.champion_index = index
        self.labels_since_promotion = 0
        outcome = f"promoted {new!r} over {old!r}"
        self._audit(request_record(offset, request, outcome))
        log.warning("partition %d: %s at offset %d (%s)", self.partition, outcome.upper(), offset, request)
        return outcome

    def _audit(self, record: dict[str, Any]) -> None:
        self.changes = [*self.changes[-(KEEP_CHANGES - 1) :], record]

    def promote(self, name: str, offset: int) -> str:
        """A promotion requested through the log (the control event at `offset`); the outcome."""
        self.advance(offset)
        names = self.names()
        request = f"promote {name}"
        if name not in names:
            outcome = f"refused: no model {name!r} on this partition (models: {', '.join(names)})"
        elif names.index(name) == self.champion_index:
            outcome = f"unchanged: {name!r} is already the champion"
        else:
            return self._promote(names.index(name), offset, request)
        self._audit(request_record(offset, request, outcome))
        return outcome

    def rollback_wait(self, at: float) -> float:
        """Seconds until a rollback is allowed at time `at` (0: now): each one forces a full
        snapshot that overwrites a kept one, so they are rate-limited (record time in the log,
        so a replay decides alike; wall clock in the web views, which answer 429)."""
        if not self.rollback_min_interval or not self.last_rollback_at:
            return 0.0
        return max(0.0, self.last_rollback_at + self.rollback_min_interval - at)

    def remember_control(self, control_id: str) -> None:
        self.control_ids = [*self.control_ids[-(KEEP_CONTROL_IDS - 1) :], control_id]

    def roll_back(self, older: PartitionState, seq: int, offset: int, at: float = 0.0) -> str:
        """The rollback requested by the control event at `offset` (record time `at`): the models
        (with their metrics, drift detectors and champion) become those of snapshot #`seq`; the
        position in the log, the counters and the events waiting for labels stay."""
        self.advance(offset)
        if older.names() != self.names():
            outcome = (
                f"refused: snapshot #{seq} holds models {older.names()}, this partition runs {self.names()}"
            )
        else:
            self.contenders = older.contenders
            self.champion_index = older.champion_index
            self.labels_since_promotion = older.labels_since_promotion
            self.rollbacks += 1
            self.last_rollback_at = at
            outcome = f"rolled back to snapshot #{seq} (offset {older.offset})"
            log.warning("partition %d: ROLLED BACK to snapshot #%d at offset %d", self.partition, seq, offset)
        self._audit(request_record(offset, f"rollback {seq}", outcome))
        return outcome

    def refuse(self, offset: int, request: str, why: str) -> str:
        """A control event that cannot apply (e.g. its snapshot is gone): counted, audited, skipped."""
        self.advance(offset)
        outcome = f"refused: {why}"
        self._audit(request_record(offset, request, outcome))
        return outcome

    def _wait_for_label(
        self, event_id: str, x: dict[str, Feature] | None, predictions: Predictions, at: float, size: int
    ) -> None:
        """Keep the event until its label comes, within the count and byte bounds (the oldest
        go first). Sizes are the events' own bytes, so a replay evicts exactly the same ones."""
        self._expire(at)
        replaced = self.pending.pop(event_id, None)  # an id sent twice waits once, as the newest
        if replaced is not None:  # the older one is dropped, and counted like any other
            self.pending_bytes -= replaced[3]
            self.pending_evicted += 1
        self.pending[event_id] = (x, predictions, at, size)
        self.pending_bytes += size
        limit = self.pending_max_bytes or float("inf")
        while len(self.pending) > self.pending_max or self.pending_bytes > limit:
            self.pending_bytes -= self.pending.popitem(last=False)[1][3]
            self.pending_evicted += 1

    def _expire(self, now: float) -> None:
        """Drop the events that waited longer than pending_max_age (oldest first)."""
        if not self.pending_max_age or not self.pending:
            return
        horizon = now - self.pending_max_age
        while self.pending and next(iter(self.pending.values()))[2] < horizon:
            self.pending_bytes -= self.pending.popitem(last=False)[1][3]
            self.pending_expired += 1

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
        self.reseeked_at = 0.0  # a monotonic time of the process that wrote the snapshot
        self.reseeks_without_progress = 0

    def version(self) -> dict[str, Any]:
        """Which model made a prediction: replaying the partition to its offset reproduces it."""
        champion = self.champion
        return {
            "name": champion.name,
            "snapshot_seq": self.snapshot_seq,
            "learned": champion.learned,
            "resets": champion.resets,
            "rollbacks": self.rollbacks,
        }

    def summary(self, now: float) -> dict[str, Any]:
        """The partition as /models shows it."""
        return {
            "partition": self.partition,
            "model": self.model_name,
            "model_class": self.champion.model_class,
            "task": self.task,
            "offset_applied": self.offset,
            "events_seen": self.events_seen,
            "events_learned": self.events_learned,
            "labels_late": self.labels_late,
            "labels_unknown": self.labels_unknown,
            "pending_labels": len(self.pending),
            "pending_bytes": self.pending_bytes,
            "pending_evicted": self.pending_evicted,
            "pending_expired": self.pending_expired,
            "deadletters": self.deadletters,
            "model_errors": self.model_errors,
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
            "drift": {
                **self.drift.summary(),
                "policy": self.drift_policy,
                "model_resets": self.champion.resets,
            },
            "models": [
                {**c.summary(), "role": "champion" if i == self.champion_index else "challenger"}
                for i, c in enumerate(self.contenders)
            ],
            "promotion_rule": {"window": self.promote_after, "margin": self.promote_margin}
            if self.promote_after
            else None,
            "changes": list(self.changes),
            "rollbacks": self.rollbacks,
            "snapshot": {
                "seq": self.snapshot_seq,
                "offset": self.snapshot_offset,
                "bytes": self.snapshot_bytes,
                "time": self.snapshot_at or None,
                "age_s": round(now - self.snapshot_at, 3) if self.snapshot_at else None,
                "errors": self.snapshot_errors,
            },
        }
