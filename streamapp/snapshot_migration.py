"""The one place older snapshot formats become today's state.

Format 2 pickled the whole `streamapp.state.PartitionState`: configuration and this worker's
runtime fields mixed into the learning, the task as a string in every model, metric and drift
detector, and the events waiting for labels as tuples. Its payload is unpickled (behind the same
signature check and allowlist) into the stand-ins below and rebuilt as a format-3 state, so an
upgrade keeps every model and its exact position in the log instead of replaying the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamapp.partition import PartitionState
from streamapp.schema import LearnedSchema
from streamapp.tasks import Tracked, task_named
from streamapp.waiting import Waiting, WaitingEvents


class Format2State:
    """A format-2 partition state as pickled: its attributes only."""


#: globals of format-2 pickles that no longer exist, and what is unpickled in their place
FORMAT_2_GLOBALS: Mapping[tuple[str, str], type] = {
    ("streamapp.state", "PartitionState"): Format2State,
    ("streamapp.metrics", "_Tracked"): Tracked,
}

#: the learning of a format-2 state that carries over as it is, with its class-level default
_CARRIED: dict[str, Any] = {
    "partition": None,
    "contenders": None,
    "offset": -1,
    "first_offset": -1,
    "champion_index": 0,
    "labels_since_promotion": 0,
    "events_seen": 0,
    "events_learned": 0,
    "labels_late": 0,
    "labels_unknown": 0,
    "deadletters": 0,
    "model_errors": 0,
    "gaps": 0,
    "replays_skipped": 0,
    "events_lost_to_retention": 0,
    "rollbacks": 0,
    "last_rollback_at": 0.0,
    "changes": (),
    "control_ids": (),
}


def from_format_2(old: Format2State) -> PartitionState:
    """Today's state holding exactly the learning of a format-2 one."""
    fields: dict[str, Any] = vars(old)
    learned = {name: fields.get(name, default) for name, default in _CARRIED.items()}
    task = task_named(fields["task"])
    learned["task"] = task
    for contender in learned["contenders"]:
        contender.task = task
        vars(contender.metrics).pop("task", None)  # metrics and detectors no longer need it
        drift = vars(contender.drift)
        drift.pop("task", None)
        drift.setdefault("rises", 0)  # monitors from before directions were kept
        drift.setdefault("rose", False)
    schema = LearnedSchema()
    schema.feature_kinds = fields.get("feature_kinds", {})
    schema.labels_kind = fields.get("labels_kind")
    schema.classes = fields.get("classes", frozenset())
    learned["schema"] = schema
    waiting = WaitingEvents()
    for event_id, (x, predictions, at, *size) in fields.get("pending", {}).items():
        waiting.events[event_id] = Waiting(x, predictions, at, size[0] if size else 0)
    waiting.bytes = fields.get("pending_bytes", 0)
    waiting.evicted = fields.get("pending_evicted", 0)
    waiting.expired = fields.get("pending_expired", 0)
    learned["waiting"] = waiting
    state = PartitionState.__new__(PartitionState)
    state.__setstate__(learned)
    return state
