"""The state of one partition and the one function that moves it: `PartitionState.apply`.

Everything a partition's model does is a deterministic function of that partition's log, applied
once and in offset order. `apply(offset, message, at)` is that function: it guards the offset,
checks the message before anything changes, scores and learns, and says what came of it as an
Outcome (a prediction to emit, a dead letter, a replay skipped, a gap, a control result). No I/O:
the processor routes outcomes to Kafka, and tests compare this class with River directly.

What is pickled into a snapshot is the partition's learning (models, metrics, counters, events
waiting for labels); configuration (PartitionConfig) is applied at creation and after a restore,
and this worker's ownership (`runtime`: recovery, snapshots) is never pickled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from streamapp import changes
from streamapp.changes import Unavailable
from streamapp.contenders import Contender, align, log_drift
from streamapp.metrics import PrequentialMetrics
from streamapp.models import ModelSpec
from streamapp.ownership import Ownership
from streamapp.records import BadEvent, Control, Event, Feature, LateLabel
from streamapp.schema import LearnedSchema
from streamapp.summary import model_version, summarize
from streamapp.tasks import Task, task_named
from streamapp.waiting import Bounds, Predictions, Waiting, WaitingEvents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionConfig:
    """The settings that bound and steer a partition (STREAMAPP_*): not part of the log, so
    applied at creation and after every restore, never pickled."""

    pending_max: int = 0  # events waiting for their label; 0: none wait
    pending_max_age: float = 0.0  # seconds of record time; 0: no limit
    pending_max_bytes: int = 0  # 0: no limit
    drift_policy: str = "none"  # "reset": a new model with the same parameters on each drift
    max_classes: int = 100
    rollback_min_interval: float = 0.0  # seconds of record time between two rollbacks
    promote_after: int = 0  # the promotion rule's window of labels; 0: by request only
    promote_margin: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> PartitionConfig:
        return cls(
            settings.pending_labels_max,
            settings.pending_labels_max_age,
            settings.pending_labels_max_bytes,
            settings.drift_policy,
            settings.max_classes,
            settings.rollback_min_interval,
            settings.promote_after,
            settings.promote_margin,
        )

    @cached_property
    def waiting_bounds(self) -> Bounds:
        return Bounds(self.pending_max, self.pending_max_bytes, self.pending_max_age)


# -- what applying one message came to --------------------------------------------------------
# Plain slotted dataclasses, not frozen ones: a frozen __init__ costs a microsecond per event.


@dataclass(slots=True)
class Refused:
    """A message that is refused before it reaches the state (undecodable, a bad signature, a
    record a model failed on): applied as a dead letter with the reason."""

    reason: str


@dataclass(slots=True)
class Copy:
    """A record of the sequence topic: `message`, copied from offset `offset` of its `source`
    (the events or the labels topic); applied once however often it was copied."""

    source: str
    offset: int
    message: Event | LateLabel | Control | Refused


Message = Event | LateLabel | Control | Refused | Copy


@dataclass(slots=True)
class Scored:
    """An event was scored: the prediction record's content."""

    event: Event
    prediction: dict[str, Any]  # the champion's
    version: dict[str, Any]  # which model made it (see PartitionState.version)
    learned: bool
    predict_s: float
    learn_s: float
    challengers: dict[str, dict[str, Any]] | None  # their shadow predictions, by model name
    replayed: bool  # an earlier owner scored it already


@dataclass(slots=True)
class DeadLetter:
    reason: str


@dataclass(slots=True)
class Labelled:
    matched: bool  # False: no event was waiting for it (counted in labels_unknown)


@dataclass(slots=True)
class Controlled:
    outcome: str
    rolled_back: bool  # the models changed: snapshot now, so recovery starts after it


@dataclass(slots=True)
class Skipped:
    """An offset applied already (a replay after a seek or a rebalance)."""


@dataclass(slots=True)
class Duplicate:
    """A copy of a record already applied (the sequence topic's at-least-once): offset advanced,
    nothing else changed."""


@dataclass(slots=True)
class Gap:
    """Offsets before this one never arrived: nothing applied, the consumer must go back."""

    expected: int


@dataclass(slots=True)
class Poisoned:
    """A model raised while learning, after every check passed: the state may be half-changed,
    so it must be put back as it was before this offset (Processor.rewind)."""

    reason: str


Outcome = Scored | DeadLetter | Labelled | Controlled | Skipped | Duplicate | Gap | Poisoned


class LearnFailed(Exception):
    """A model raised half-way through learning: `apply` answers Poisoned."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"model error: {type(cause).__name__}: {cause}")


#: (partition, seq) -> the state of kept snapshot #seq, or Unavailable
SnapshotSource = Callable[[int, int], "PartitionState"]


def no_snapshots(partition: int, seq: int) -> PartitionState:
    raise Unavailable(f"snapshot #{seq} is not kept (kept: none)")


def first_copy(
    partition: int, source_offsets: dict[str, int], copy: Copy
) -> Event | LateLabel | Control | Refused | None:
    """The copied message if its source offset is past the last one applied of its source
    (noted now), else None: the sequence topic repeated it (streamapp/sequence.py)."""
    last = source_offsets.get(copy.source)
    if last is not None and copy.offset <= last:
        return None
    if last is not None and copy.offset > last + 1:
        # The forwarder never copies past a gap; only retention (logged there) or a defect skips.
        log.error(
            "partition %d: the sequence topic has no copy of %s offsets %d..%d: never applied, the "
            "model is NOT exact for them",
            partition,
            copy.source,
            last + 1,
            copy.offset - 1,
        )
    source_offsets[copy.source] = copy.offset
    return copy.message


def added_since_format_3() -> dict[str, Any]:
    """The learning added to PartitionState after format 3 came out, as a new partition has it."""
    return {"source_offsets": {}, "duplicates": 0}


#: what a snapshot does not hold: configuration and this worker's ownership
NOT_PICKLED = frozenset({"config", "runtime"})


class PartitionState:
    """One partition's live models; its learning is pickled into each snapshot."""

    config: PartitionConfig

    def __init__(
        self,
        partition: int,
        spec: ModelSpec,
        config: PartitionConfig = PartitionConfig(),
        challengers: Sequence[ModelSpec] = (),
    ) -> None:
        self.config = config
        self.runtime = Ownership()
        self.partition = partition
        self.task: Task = task_named(spec.task)
        #: the champion first (until a promotion), then the challengers, in configured order
        self.contenders = [Contender(s, config.promote_after) for s in (spec, *challengers)]
        self.champion_index = 0  # which of the contenders' predictions is emitted
        self.labels_since_promotion = 0
        self.schema = LearnedSchema()
        self.waiting = WaitingEvents()
        self.offset = -1  # last source offset applied; -1 before the first event
        self.first_offset = -1  # the first offset this model (through all its snapshots) applied
        self.events_seen = 0
        self.events_learned = 0
        self.labels_late = 0
        self.labels_unknown = 0
        self.deadletters = 0
        self.model_errors = 0  # events a model raised on after they passed every check
        self.gaps = 0
        self.replays_skipped = 0
        self.events_lost_to_retention = 0
        self.rollbacks = 0
        self.last_rollback_at = 0.0  # record time of the last rollback
        self.changes: Sequence[dict[str, Any]] = ()  # the last promotions and rollbacks, oldest first
        self.control_ids: Sequence[str] = ()  # ids of the last KEEP_CONTROL_IDS control events applied
        # with STREAMAPP_LABELS_TOPIC: the last offset applied of each source of the sequence
        # topic, and the copies skipped as already applied (streamapp/sequence.py)
        self.source_offsets: dict[str, int] = {}
        self.duplicates = 0

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in NOT_PICKLED}

    def __setstate__(self, learned: dict[str, Any]) -> None:
        self.__dict__.update(added_since_format_3())  # what a snapshot of an older version lacks
        self.__dict__.update(learned)
        self.runtime = Ownership()  # and the config, which the loader applies (configure)

    # -- the models ------------------------------------------------------------------------------

    @property
    def champion(self) -> Contender:
        return self.contenders[self.champion_index]

    @property
    def model(self) -> Any:
        return self.champion.model

    @property
    def metrics(self) -> PrequentialMetrics:
        return self.champion.metrics

    def names(self) -> list[str]:
        return [c.name for c in self.contenders]

    def configure(self, config: PartitionConfig, specs: Sequence[ModelSpec]) -> None:
        """Fit a restored state to the configuration and the configured models (see align)."""
        self.config = config
        for contender in self.contenders:
            contender.watch(config.promote_after)
        if [s.name for s in specs] != self.names():
            self.contenders, order, self.champion_index = align(
                self.contenders, self.champion_index, specs, config.promote_after, self.partition
            )
            self.waiting.reorder(order)

    # -- the one entry point ---------------------------------------------------------------------

    def apply(
        self, offset: int, message: Message, at: float = 0.0, snapshots: SnapshotSource = no_snapshots
    ) -> Outcome:
        """Apply the message at `offset` (record time `at`, in seconds) once, in offset order:
        the only place the offset advances. A message that fails a check, or whose prediction
        raises, changes nothing but the dead-letter count. `snapshots`: for rollbacks."""
        verdict = self.admit(offset)
        if verdict == "replay":
            return SKIPPED
        if verdict == "gap":
            return Gap(self.offset + 1)
        runtime = self.runtime
        runtime.events_replayed += offset < runtime.replay_until
        if isinstance(message, Copy):
            if (copied := first_copy(self.partition, self.source_offsets, message)) is None:
                self.duplicates += 1
                self.offset = offset
                return Duplicate()
            message = copied
        outcome: Outcome
        try:
            if isinstance(message, Event):
                outcome = self.apply_event(message, offset, at)
            elif isinstance(message, LateLabel):
                outcome = Labelled(self.apply_label(message, offset, at))
            elif isinstance(message, Control):
                outcome = Controlled(*changes.apply_control(self, message, offset, at, snapshots))
            else:
                raise BadEvent(message.reason)
        except BadEvent as exc:
            outcome = DeadLetter(str(exc))
        except LearnFailed as exc:
            log.exception("partition %d offset %d: a model raised while learning", self.partition, offset)
            return Poisoned(str(exc))  # not advanced: the processor puts the state back
        except Exception as exc:  # a model's predict_one raised: nothing was changed
            self.model_errors += 1
            log.exception("partition %d offset %d: the model raised", self.partition, offset)
            outcome = DeadLetter(f"model error: {type(exc).__name__}: {exc}")
        if isinstance(outcome, DeadLetter):
            self.deadletters += 1
        self.offset = offset
        runtime.events_since_snapshot += 1
        return outcome

    def admit(self, offset: int) -> str:
        """The offset guard: 'apply' the next offset, skip a 'replay', refuse a 'gap'.

        A model never learns across a gap: the offsets in between would be lost to it for good.
        Before its first event a new state knows where its log starts only once recovery has
        positioned it; until then any first offset is accepted.
        """
        if offset <= self.offset:
            self.replays_skipped += 1
            return "replay"
        if self.runtime.positioned and offset != self.offset + 1:
            self.gaps += 1
            return "gap"
        if self.first_offset < 0:
            self.first_offset = offset
        self.runtime.positioned = True
        return "apply"

    # -- learning --------------------------------------------------------------------------------

    def predict(self, x: dict[str, Feature]) -> dict[str, Any]:
        """The champion's score without learning: {'class', 'proba'} | {'value'} | {'score'}."""
        return self.champion.predict(x)

    def apply_event(self, event: Event, offset: int, at: float = 0.0) -> Scored:
        """Every model predicts, then learns if the label came along (anomaly models learn every
        event); the champion's prediction is emitted. `at` (record time) ages the waiting events.
        A step of `apply`: raises BadEvent before anything changes, LearnFailed half-way."""
        new_features = self.schema.check_features(event.x)
        if event.y is not None:
            self.schema.check_label(self.task, event.y, self.config.max_classes)
        contenders = self.contenders
        champion = self.champion_index  # a promotion while scoring applies from the next event
        version = self.version()
        t0 = time.perf_counter()
        if len(contenders) == 1:  # the common case, without a loop's cost (~1 us of ~27 for HT)
            predictions = [contenders[0].predict(event.x)]
        else:
            predictions = [c.predict(event.x) for c in contenders]
        t1 = time.perf_counter()
        if new_features:
            self.schema.note_features(event.x)
        try:
            learned = self._learn_event(event, predictions, offset, at)
        except Exception as exc:
            raise LearnFailed(exc) from exc
        t2 = time.perf_counter()
        self.events_seen += 1
        self.events_learned += learned
        shadows = _shadows(contenders, predictions, champion) if len(contenders) > 1 else None
        replayed = offset < self.runtime.replay_until
        return Scored(event, predictions[champion], version, learned, t1 - t0, t2 - t1, shadows, replayed)

    def _learn_event(self, event: Event, predictions: Predictions, offset: int, at: float) -> bool:
        """Metrics, drift and models meet the event; whether it was learned now."""
        if self.task.learns_unlabelled:
            for contender in self.contenders:
                contender.learn(event.x, None)
            if event.y is not None:
                self._score(event.y, predictions, offset)
                self.waiting.supersede(event.id)
            elif self.config.pending_max:
                self._wait(event, None, predictions, at)
            return True
        if event.y is not None:
            self._score(event.y, predictions, offset)
            self.waiting.supersede(event.id)
            for contender in self.contenders:  # a drift reset may just have replaced a model
                contender.learn(event.x, event.y)
            return True
        if self.config.pending_max:
            self._wait(event, event.x, predictions, at)
        return False

    def _wait(self, event: Event, x: dict[str, Feature] | None, predictions: Predictions, at: float) -> None:
        self.waiting.add(event.id, Waiting(x, predictions, at, event.size), self.config.waiting_bounds)

    def apply_label(self, label: LateLabel, offset: int, at: float = 0.0) -> bool:
        """Learn from a late label with the features and predictions kept at scoring time:
        River's progressive validation with delay. A label for an id not waiting (unknown,
        evicted, expired) is only counted; one that does not fit raises BadEvent before anything
        changes, and the event keeps waiting for a label that does."""
        self.schema.check_label(self.task, label.y, self.config.max_classes)
        self.waiting.expire(at, self.config.pending_max_age)
        waiting = self.waiting.take(label.id)
        if waiting is None:
            self.labels_unknown += 1
            return False
        try:
            self._score(label.y, waiting.predictions, offset)
            if waiting.x is not None:
                for contender in self.contenders:
                    contender.learn(waiting.x, label.y)
        except Exception as exc:
            raise LearnFailed(exc) from exc
        if waiting.x is not None:
            self.events_learned += 1
        self.labels_late += 1
        return True

    def _score(self, y_true: Any, predictions: Predictions, offset: int) -> None:
        """A label meets the predictions: each model's metrics and drift detector see its own."""
        self.schema.note_label(self.task, y_true)
        reset = self.config.drift_policy == "reset"
        if len(predictions) == 1:
            if predictions[0] is not None and self.contenders[0].score(y_true, predictions[0], offset, reset):
                log_drift(self.partition, self.contenders[0], offset, reset)
            return
        for contender, prediction in zip(self.contenders, predictions, strict=True):
            if prediction is not None and contender.score(y_true, prediction, offset, reset):
                log_drift(self.partition, contender, offset, reset)
        if self.config.promote_after:
            self.labels_since_promotion += 1
            changes.promote_by_rule(self, offset)

    def rollback_wait(self, at: float) -> float:
        return changes.rollback_wait(self, at)

    def version(self) -> dict[str, Any]:
        return model_version(self)

    def summary(self, now: float) -> dict[str, Any]:
        """The partition as /models shows it."""
        return summarize(self, now)


SKIPPED = Skipped()


def _shadows(contenders: Sequence[Contender], predictions: Predictions, champion: int) -> dict[str, Any]:
    """The challengers' predictions, by model name (None for one that joined after the event)."""
    return {c.name: p for i, (c, p) in enumerate(zip(contenders, predictions, strict=True)) if i != champion}
