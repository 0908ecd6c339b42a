"""A record of its own shape (a bank's topic: `txn_id`, `amount`, a nested `device`, `is_fraud`)
as one of streamapp's messages: which field is the id, which the label, the record time, and
which the features. Configured, not coded (STREAMAPP_ID_FIELD, _LABEL_FIELD, _FEATURES,
_EXCLUDE, _TIMESTAMP_FIELD, _TRANSFORM); a field of a nested record is named by its dotted path.

Pure: a decoded record in, an Event or a LateLabel out, or BadEvent with the reason (the
processor dead-letters it). A record with nothing but its id, label and time is a late label;
any other is an event, labelled or not. A null or absent field is a missing value (River's
models take the features that are there), so an optional field added to a schema mid-stream is
simply absent from the older records.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from streamapp.imports import load_callable
from streamapp.records import BadEvent, Event, Feature, LateLabel, Limits, features, label

Path = tuple[str, ...]
Transform = Callable[[dict[str, Any]], Any]


def split(path: str) -> Path:
    return tuple(path.split("."))


def dotted(path: Path) -> str:
    return ".".join(path)


def at(doc: dict[str, Any], path: Path) -> Any:
    """The value at `path`, None when a step is missing, null or not an object."""
    value: Any = doc
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def feature_value(name: str, value: Any) -> Feature | None:
    """A field's value as a feature: numbers, strings and booleans as they are, Avro decimals as
    floats, null as missing (None); anything else is refused with what to do about it."""
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bool | int | float | str):
        return value
    what = "an object" if isinstance(value, dict) else type(value).__name__
    raise BadEvent(
        f"field {name[:64]!r} is {what}, not a number, string or boolean: leave it out of "
        "STREAMAPP_FEATURES (or add it to STREAMAPP_EXCLUDE), or turn it into one with STREAMAPP_TRANSFORM"
    )


@dataclass(frozen=True)
class Mapping:
    """Where the id, label, time and features are in a record (see the module docstring)."""

    id_path: Path = ("id",)
    label_path: Path = ("y",)
    #: (path, spread): spread takes every field of the object at path, under its own name
    feature_fields: tuple[tuple[Path, bool], ...] | None = ((("x",), True),)  # None: every field
    exclude: frozenset[Path] = frozenset()
    timestamp_path: Path | None = None
    timestamp_scale: float = 1.0  # numbers in the timestamp field times this: seconds
    transform: Transform | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Mapping:
        """The settings' mapping; a transform that cannot be imported fails here, at start."""
        transform = load_callable(settings.transform, "STREAMAPP_TRANSFORM") if settings.transform else None
        return cls(
            id_path=split(settings.id_field),
            label_path=split(settings.label_field),
            feature_fields=tuple(
                (split(f[:-2]), True) if f.endswith(".*") else (split(f), False) for f in settings.features
            )
            or None,
            exclude=frozenset(split(f) for f in settings.exclude),
            timestamp_path=split(settings.timestamp_field) if settings.timestamp_field else None,
            timestamp_scale=0.001 if settings.timestamp_unit == "ms" else 1.0,
            transform=transform,
        )

    @property
    def is_contract(self) -> bool:
        """streamapp's own {"id", "x", "y"} (records.parse reads it as it always has)."""
        default = Mapping()
        return (
            self.id_path == default.id_path
            and self.label_path == default.label_path
            and self.feature_fields == default.feature_fields
            and self.timestamp_path in (None, ("ts",))
            and self.transform is None
        )

    def transformed(self, doc: Any) -> dict[str, Any]:
        if self.transform is not None:
            try:
                doc = self.transform(doc)
            except Exception as exc:  # the user's code: any failure is this record's reason
                raise BadEvent(f"STREAMAPP_TRANSFORM raised {type(exc).__name__}: {exc}"[:500]) from None
        if not isinstance(doc, dict):
            raise BadEvent(f"the record is {type(doc).__name__}, not an object of fields")
        return doc

    def message(self, doc: Any, size: int, limits: Limits) -> Event | LateLabel:
        """An event (with features) or a late label (a label and no feature) of the events topic."""
        doc = self.transformed(doc)
        event_id = self._id(doc, limits)
        y = at(doc, self.label_path)
        y = None if y is None else label(y, limits, dotted(self.label_path))
        ts = self._time(doc)
        if y is not None and self._label_only(doc):
            return LateLabel(event_id, y, ts)
        return Event(event_id, features(self._features(doc), limits), y, ts, size)

    def late_label(self, doc: Any, limits: Limits) -> LateLabel:
        """A record of the labels topic: its id and label, nothing else."""
        doc = self.transformed(doc)
        event_id = self._id(doc, limits)
        y = at(doc, self.label_path)
        if y is None:
            raise BadEvent(f"a record of the labels topic without a label ({dotted(self.label_path)!r})")
        return LateLabel(event_id, label(y, limits, dotted(self.label_path)), self._time(doc))

    def _label_only(self, doc: dict[str, Any]) -> bool:
        """Nothing but the id, the label, the time and excluded fields: a late label."""
        own = {self.id_path[0], self.label_path[0]}
        if self.timestamp_path is not None:
            own.add(self.timestamp_path[0])
        own.update(path[0] for path in self.exclude if len(path) == 1)
        return all(name in own for name in doc)

    def _id(self, doc: dict[str, Any], limits: Limits) -> str:
        value = at(doc, self.id_path)
        name = dotted(self.id_path)
        if value is None:
            raise BadEvent(f"missing {name!r} (the id, STREAMAPP_ID_FIELD)")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # Avro longs and JSON numbers are common transaction ids
        if not isinstance(value, str) or not value:
            raise BadEvent(f"{name!r} (the id) must be a non-empty string or a whole number")
        if len(value) > limits.max_name_length:
            raise BadEvent(f"{name!r} (the id) is over {limits.max_name_length} characters")
        return value

    def _features(self, doc: dict[str, Any]) -> dict[str, Feature]:
        x: dict[str, Feature] = {}
        if self.feature_fields is None:
            self._flatten(doc, "", 0, x)
            return x
        for path, spread in self.feature_fields:
            value = at(doc, path)
            if spread:
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise BadEvent(
                        f"{dotted(path)!r} must be an object of features, got {type(value).__name__}"
                    )
                for name, item in value.items():
                    if (kept := feature_value(f"{dotted(path)}.{name}", item)) is not None:
                        x[name] = kept
            elif (kept := feature_value(dotted(path), value)) is not None:
                x[dotted(path)] = kept
        return x

    @cached_property
    def _not_features(self) -> frozenset[str]:
        """With every field a feature: the dotted paths that are not."""
        own = (self.id_path, self.label_path, self.timestamp_path, *self.exclude)
        return frozenset(dotted(path) for path in own if path is not None)

    def _flatten(self, doc: dict[str, Any], prefix: str, depth: int, x: dict[str, Feature]) -> None:
        skip = self._not_features
        for name, value in doc.items():
            path = f"{prefix}{name}"
            if path in skip:
                continue
            kind = type(value)  # the common cases first: a plain value, then a nested record
            if kind is float or kind is int or kind is str or kind is bool:
                x[path] = value
            elif kind is dict:
                if depth >= 7:
                    raise BadEvent(f"{path[:64]!r} nests objects deeper than 8 levels")
                self._flatten(value, f"{path}.", depth + 1, x)
            elif (kept := feature_value(path, value)) is not None:
                x[path] = kept

    def _time(self, doc: dict[str, Any]) -> float | None:
        """The record time in seconds since the epoch; None when the Kafka timestamp is the time
        (no timestamp field configured, or the record has none)."""
        if self.timestamp_path is None:
            return None
        value = at(doc, self.timestamp_path)
        name = dotted(self.timestamp_path)
        if value is None:
            return None
        if isinstance(value, datetime.datetime):  # Avro's timestamp-millis/-micros
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.UTC)
            return value.timestamp()
        if isinstance(value, str):
            try:
                parsed = datetime.datetime.fromisoformat(value)
            except ValueError:
                raise BadEvent(f"{name!r} is not an ISO 8601 time: {value[:40]!r}") from None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)).timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e17:
            return float(value) * self.timestamp_scale
        raise BadEvent(f"{name!r} must be a time: a number (STREAMAPP_TIMESTAMP_UNIT) or ISO 8601 text")
