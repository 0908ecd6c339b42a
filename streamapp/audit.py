"""Reproduce a past decision: a partition's model rebuilt as it was at an offset, the event at that
offset scored again, and why the model decided so.

A partition's model is a deterministic function of its log, so the decision for offset O is
rebuilt from the newest kept snapshot taken before O (or from the start of the log) by applying
the records after it up to O through the worker's own path (`Processor.read`, then
`PartitionState.apply`). Everything in the model version is reproduced except `snapshot_seq` when
no snapshot taken between the restored one and O is still kept: how many snapshots a worker took
depends on wall-clock time, not on the log.

`streamapp replay` and the web view `GET /models/{partition}/explain` read the topics for it
(streamapp/replay.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faust.types import TP
from river import compose

from streamapp.partition import Gap, PartitionState, Scored
from streamapp.processor import Processor
from streamapp.records import Feature

TOP_CONTRIBUTIONS = 10


class NotReproducible(Exception):
    """The decision cannot be rebuilt (the log lacks records, the offset holds no event)."""


class OutOfRange(NotReproducible):
    """The offset is not in the partition's log: beyond its end, or before its start."""


class NotScored(NotReproducible):
    """The offset holds a record that was not scored: a late label, a control event, a dead letter."""


@dataclass(frozen=True)
class Reproduced:
    """The decision at `offset` as the replay made it."""

    offset: int
    source: str  # "snapshot #k (offset n)" or "the start of the log"
    scored: Scored
    explanation: dict[str, Any]


def rebuilt_before(processor: Processor, partition: int, offset: int) -> tuple[PartitionState, str]:
    """The partition's state from its newest kept snapshot taken before `offset` that loads,
    else a new model that starts with the log."""
    state = processor.store.restore(partition, before=offset)
    if state is None:
        return processor.store.fresh(partition), "the start of the log"
    return state, f"snapshot #{state.runtime.snapshot_seq} (offset {state.offset})"


def reproduce(processor: Processor, tp: TP, offset: int, log: Iterable[ConsumerRecord]) -> Reproduced:
    """The decision for the event at `offset` of `tp`, replayed from `log` (the partition's
    records in offset order, from before the rebuilt state's offset on)."""
    state, source = rebuilt_before(processor, tp.partition, offset)
    rollback_source = processor.store.rollback_source
    missing = f"the log of partition {tp.partition} holds no offset {offset}"
    for record in log:
        if record.offset <= state.offset:
            continue
        if record.offset > offset:  # the log skips it: retention deleted it, or compaction
            raise OutOfRange(f"{missing} (the next one it holds is {record.offset})")
        at = record.timestamp / 1000
        message = processor.read(tp, record, at)
        # The record time as the worker took it (STREAMAPP_TIMESTAMP_FIELD, else Kafka's).
        outcome = state.apply(record.offset, message, processor.decoder.time(message, at), rollback_source)
        if isinstance(outcome, Gap):
            raise NotReproducible(f"the log given lacks offsets {outcome.expected}..{record.offset - 1}")
        if record.offset != offset:
            continue
        if not isinstance(outcome, Scored):
            raise NotScored(f"offset {offset} of partition {tp.partition} is no scored event: {outcome}")
        return Reproduced(offset, source, outcome, explain(state.model, outcome.event.x))
    if state.offset < 0:  # not one record read: the log starts after the offset
        raise OutOfRange(f"{missing} (retention deleted it, or it was never written)")
    raise OutOfRange(f"the log of partition {tp.partition} ends before offset {offset}")


def explain(model: Any, x: dict[str, Feature]) -> dict[str, Any]:
    """Why `model` scores `x` as it does, as far as the model can say: the decision path of a
    tree, the largest feature contributions (weight x value) of a linear model."""
    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    last = steps[-1]
    if hasattr(last, "weights"):
        features = x
        for step in steps[:-1]:
            features = step.transform_one(features)
        contributions = {name: last.weights.get(name, 0.0) * value for name, value in features.items()}
        top = sorted(contributions.items(), key=lambda item: -abs(item[1]))[:TOP_CONTRIBUTIONS]
        return {
            "kind": "contributions",
            "intercept": float(getattr(last, "intercept", 0.0)),
            "top": [{"feature": name, "contribution": float(value)} for name, value in top],
        }
    if hasattr(last, "debug_one"):
        path = model.debug_one(x)
        if path is None:  # a tree that has not learned yet: no path to follow
            return {"kind": "none", "why": f"{type(last).__name__} has learned nothing yet"}
        return {"kind": "decision path", "text": path}
    return {"kind": "none", "why": f"{type(last).__name__} explains no single decision"}
