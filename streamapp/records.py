"""Message schemas: decoding and validating events, and encoding predictions and dead letters.

Events arrive as JSON written by any producer, so nothing is trusted: every way a message can be
wrong has its own reason, which travels with the raw bytes to the dead-letter topic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Label = bool | int | float | str
Feature = bool | int | float | str


class BadEvent(ValueError):
    """The message cannot be used; str(self) is the reason sent to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may carry, each violation a dead letter with its reason.

    They keep one message from exhausting a worker's memory or a model's arithmetic: River's
    statistics square their inputs and overflow near 1e154, after which a linear model predicts
    NaN for good; a flood of unique long names grows every model.
    """

    max_event_bytes: int = 65536
    max_features: int = 1000
    max_name_length: int = 256  # feature names, string values, ids and string labels
    max_abs_number: float = 1e15

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            settings.max_event_bytes,
            settings.max_features,
            settings.max_name_length,
            settings.max_abs_number,
        )


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Event:
    """Features to score, with the label when it came with them; `size`: the value's bytes,
    what the event costs while it waits for a late label."""

    id: str
    x: dict[str, Feature]
    y: Label | None
    ts: float | None
    size: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class LateLabel:
    """The label of an earlier event of the same key, sent when the truth became known."""

    id: str
    y: Label
    ts: float | None = None  # the record time, when a timestamp field gives it


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


def json_value(raw: bytes) -> Any:
    """The JSON document in `raw`; BadEvent naming what is wrong (NaN and infinities too)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
    # orjson refuses NaN, Infinity and 1e999 like any other bad token; name them precisely.
    if "infinity" in reason:
        raise BadEvent(f"non-finite number: {reason}")
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except BadEvent:
        raise
    except (ValueError, RecursionError):  # nested deeper than the stack: not for us either
        pass
    raise BadEvent(f"not JSON: {reason}")


def _number(where: str, value: bool | int | float, limits: Limits) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BadEvent(f"non-finite number in {where}")
    if abs(value) > limits.max_abs_number:
        raise BadEvent(
            f"number in {where} out of range: |{value:.6g}| > {limits.max_abs_number:g} "
            "(STREAMAPP_MAX_ABS_NUMBER)"
        )


def _text(where: str, value: str, limits: Limits) -> None:
    if len(value) > limits.max_name_length:
        raise BadEvent(
            f"{where} is {len(value)} characters, over {limits.max_name_length} (STREAMAPP_MAX_NAME_LENGTH)"
        )


def label(value: Any, limits: Limits, name: str = "y") -> Label:
    """A label as given (`name`: its field, for the reason): a boolean, number or string."""
    if not isinstance(value, bool | int | float | str):
        raise BadEvent(f"{name!r} must be a boolean, number or string, got {type(value).__name__}")
    if isinstance(value, str):
        _text(f"{name!r}", value, limits)
    else:
        _number(f"{name!r}", value, limits)
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


NO_VALUE = "empty message (no value)"


def checked_size(raw: bytes | None, limits: Limits) -> bytes:
    """The value, unless it is missing or over STREAMAPP_MAX_EVENT_BYTES (checked before decoding)."""
    if raw is None:
        raise BadEvent(NO_VALUE)
    if len(raw) > limits.max_event_bytes:
        raise BadEvent(oversized(len(raw), limits.max_event_bytes))
    return raw


def oversized(size: int, limit: int) -> str:
    return f"oversized: {size} bytes > limit {limit} (STREAMAPP_MAX_EVENT_BYTES)"


def envelope_bytes(key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None) -> int:
    """What a record carries besides its value: its key and headers."""
    return len(key or b"") + sum(len(name.encode()) + len(value or b"") for name, value in headers or ())


def oversized_envelope(size: int, limit: int) -> str | None:
    """Why a record whose key and headers take `size` bytes is refused, if it is: every output
    of it (its prediction, its dead letter, its copy) carries them on."""
    if size <= limit:
        return None
    return f"oversized key and headers: {size} bytes > limit {limit} (STREAMAPP_MAX_EVENT_BYTES)"


def json_object(raw: bytes | None, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A message value that must be one JSON object, within the size bound."""
    doc = json_value(checked_size(raw, limits))
    if not isinstance(doc, dict):
        raise BadEvent(f"not a JSON object but {type(doc).__name__}")
    return doc


def parse(raw: bytes | None, limits: Limits = DEFAULT_LIMITS) -> Event | LateLabel | Control:
    """Validate one message value; raises BadEvent with the reason when it cannot be used."""
    doc = json_object(raw, limits)
    assert raw is not None  # json_object refused a missing value
    event_id = doc.get("id")
    if event_id is None:
        raise BadEvent("missing 'id'")
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("'id' must be a non-empty string")
    _text("'id'", event_id, limits)
    if "control" in doc:
        return _control(event_id, doc)
    y = doc.get("y")
    y = None if y is None else label(y, limits)
    ts = doc.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts)):
        raise BadEvent("'ts' must be a finite number (seconds since the epoch)")
    x = doc.get("x")
    if x is None:
        if y is None:
            raise BadEvent("missing 'x' (features); a label-only message needs 'y'")
        return LateLabel(event_id, y)
    return Event(event_id, features(x, limits), y, None if ts is None else float(ts), len(raw))


def features(x: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Feature]:
    """Validate a feature object: flat, bounded, with finite numbers, strings or booleans."""
    if not isinstance(x, dict):
        raise BadEvent(f"'x' must be an object of features, got {type(x).__name__}")
    if len(x) > limits.max_features:
        raise BadEvent(f"{len(x)} features, over {limits.max_features} (STREAMAPP_MAX_FEATURES)")
    longest, bound = limits.max_name_length, limits.max_abs_number
    for name, value in x.items():
        # The common case costs two comparisons; the reason is written only for a refusal.
        kind = type(value)
        if kind is bool:
            pass
        elif kind is str or isinstance(value, str):
            if len(value) > longest:
                _text(f"feature {name!r}", value, limits)
        elif kind is float or kind is int or isinstance(value, int | float):
            if not -bound <= value <= bound:  # NaN and infinities fail this too
                _number(f"feature {name!r}", value, limits)
        else:
            what = "null" if value is None else kind.__name__
            raise BadEvent(f"feature {name[:64]!r} must be a number, string or boolean, got {what}")
        if len(name) > longest:
            _text("a feature name", name, limits)
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
