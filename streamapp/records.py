"""Message schemas: decoding and validating events, and encoding predictions and dead letters.

Events arrive as JSON written by any producer, so nothing is trusted: every way a message can be
wrong has its own reason, which travels with the raw bytes to the dead-letter topic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

Label = bool | int | float | str
Feature = bool | int | float | str


class BadEvent(ValueError):
    """The message cannot be used; str(self) is the reason sent to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Event:
    """Features to score, with the label when it came with them."""

    id: str
    x: dict[str, Feature]
    y: Label | None
    ts: float | None


@dataclass(frozen=True, slots=True)
class LateLabel:
    """The label of an earlier event of the same key, sent when the truth became known."""

    id: str
    y: Label


@dataclass(frozen=True, slots=True)
class Control:
    """A change to a partition's models, written into its log so that replay repeats it:
    'promote' a model to champion, or 'rollback' to the kept snapshot number `seq`."""

    id: str
    action: str
    model: str | None = None
    seq: int | None = None

    def describe(self) -> str:
        return f"promote {self.model}" if self.action == "promote" else f"rollback {self.seq}"


def _reject_constant(name: str) -> Any:
    raise BadEvent(f"non-finite number {name} (JSON has no NaN or Infinity)")


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN, Infinity and 1e999 like any other bad token; name them precisely.
        if "infinity" in str(exc):
            raise BadEvent(f"non-finite number: {exc}") from None
        try:
            json.loads(raw, parse_constant=_reject_constant)
        except BadEvent:
            raise
        except ValueError:
            pass
        raise BadEvent(f"not JSON: {exc}") from None


def _finite(where: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise BadEvent(f"non-finite number in {where}")


def _label(value: Any) -> Label:
    if not isinstance(value, bool | int | float | str):
        raise BadEvent(f"'y' must be a boolean, number or string, got {type(value).__name__}")
    _finite("'y'", value)
    return value


def _control(event_id: str, doc: dict[str, Any]) -> Control:
    action = doc["control"]
    if action == "promote":
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise BadEvent("control 'promote' needs 'model', the name of a model of the partition")
        return Control(event_id, action, model=model)
    if action == "rollback":
        seq = doc.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise BadEvent("control 'rollback' needs 'seq', the number of a kept snapshot (1 or more)")
        return Control(event_id, action, seq=seq)
    raise BadEvent(f"unknown control {action!r} (known: promote, rollback)")


def decode(raw: bytes | None, max_bytes: int) -> Event | LateLabel | Control:
    """Validate one message value; raises BadEvent with the reason when it cannot be used."""
    if raw is None:
        raise BadEvent("empty message (no value)")
    if len(raw) > max_bytes:
        raise BadEvent(f"oversized: {len(raw)} bytes > limit {max_bytes} (STREAMAPP_MAX_EVENT_BYTES)")
    doc = _parse(raw)
    if not isinstance(doc, dict):
        raise BadEvent(f"not a JSON object but {type(doc).__name__}")
    event_id = doc.get("id")
    if event_id is None:
        raise BadEvent("missing 'id'")
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("'id' must be a non-empty string")
    if "control" in doc:
        return _control(event_id, doc)
    y = doc.get("y")
    label = None if y is None else _label(y)
    ts = doc.get("ts")
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise BadEvent("'ts' must be a number (seconds since the epoch)")
        _finite("'ts'", ts)
    x = doc.get("x")
    if x is None:
        if label is None:
            raise BadEvent("missing 'x' (features); a label-only message needs 'y'")
        return LateLabel(event_id, label)
    return Event(event_id, features(x), label, None if ts is None else float(ts))


def features(x: Any) -> dict[str, Feature]:
    """Validate a feature object: flat, with finite numbers, strings or booleans."""
    if not isinstance(x, dict):
        raise BadEvent(f"'x' must be an object of features, got {type(x).__name__}")
    for name, value in x.items():
        if not isinstance(value, bool | int | float | str):
            kind = "null" if value is None else type(value).__name__
            raise BadEvent(f"feature {name!r} must be a number, string or boolean, got {kind}")
        _finite(f"feature {name!r}", value)
    return x


def encode(doc: dict[str, Any]) -> bytes:
    """JSON for output records; dict keys may be class labels (bool, int), hence NON_STR_KEYS."""
    return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def deadletter_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Where a refused message came from and why, as headers beside its untouched bytes.

    The value and key stay as they arrived (Kafka Connect's convention), so a fixed producer can
    re-drive dead letters into the events topic unchanged.
    """
    return [
        ("streamapp.error.reason", reason.encode()),
        ("streamapp.source.topic", topic.encode()),
        ("streamapp.source.partition", str(partition).encode()),
        ("streamapp.source.offset", str(offset).encode()),
    ]
