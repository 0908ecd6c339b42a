"""What a partition has learned so far, which later messages must agree with.

A feature keeps the kind (number or string) it first had: a tree that split on a number cannot
compare it with a string, and learning fails half-way. Labels keep their first kind, and a
multiclass partition learns at most STREAMAPP_MAX_CLASSES classes. Checked before anything
changes; noted once the message is applied.
"""

from __future__ import annotations

from streamapp.records import BadEvent, Feature, Label
from streamapp.tasks import Task, label_kind


def feature_kind(value: Feature) -> str:
    """What a model does with a value: strings are categories, everything else a number."""
    return "string" if isinstance(value, str) else "number"


class LearnedSchema:
    """Feature kinds, label kind and classes learned by one partition; pickled with it."""

    def __init__(self) -> None:
        self.feature_kinds: dict[str, str] = {}  # name -> "number" | "string", as first seen
        self.labels_kind: str | None = None  # label_kind of the first label learned
        self.classes: frozenset[Label] = frozenset()  # multiclass: the labels learned

    def check_features(self, x: dict[str, Feature]) -> bool:
        """BadEvent when a feature changed its kind; True when `x` names a feature not seen yet
        (to be noted once applied)."""
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

    def note_features(self, x: dict[str, Feature]) -> None:
        kinds = self.feature_kinds
        for name, value in x.items():
            if name not in kinds:
                kinds[name] = feature_kind(value)

    def check_label(self, task: Task, y: Label, max_classes: int) -> None:
        """The label fits the task and the labels learned so far (BadEvent with the reason):
        anything else would make the models raise, or worse, learn it and then fail on every
        event."""
        kind = label_kind(y)
        task.check_label(y, kind)
        if self.labels_kind is not None and kind != self.labels_kind and task.one_label_kind:
            raise BadEvent(
                f"label {y!r:.40} is a {kind} but this partition has learned {self.labels_kind} "
                "labels; one kind per partition"
            )
        if task.counts_classes and y not in self.classes and len(self.classes) >= max_classes:
            raise BadEvent(
                f"label {y!r:.40} would be class {len(self.classes) + 1}, over {max_classes} "
                "(STREAMAPP_MAX_CLASSES)"
            )

    def note_label(self, task: Task, y: Label) -> None:
        if self.labels_kind is None:
            self.labels_kind = label_kind(y)
        if task.counts_classes and y not in self.classes:
            self.classes = self.classes | {y}
