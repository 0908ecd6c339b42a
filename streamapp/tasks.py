"""The learning task of a partition (binary, multiclass, regression, anomaly) as an object.

Chosen once, when a partition's models are built, it says how a model predicts and learns, what
its error is for the drift detector, which prequential metrics and which rolling metric it has,
and which labels it learns; the per-event path never switches on the task's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from river import metrics, utils

from streamapp.records import BadEvent, Feature, Label


@dataclass
class Tracked:
    """One prequential metric and the prediction it is fed."""

    name: str
    metric: metrics.base.Metric
    feed: str  # "class", "proba", "value" or "score"


def label_kind(y: Label) -> str:
    return "bool" if isinstance(y, bool) else type(y).__name__


class Task:
    """What depends on the task; stateless, so one instance per task serves every partition."""

    name: ClassVar[str]
    #: the kinds of label (label_kind) the task learns
    label_kinds: ClassVar[tuple[str, ...]]
    #: anomaly models learn every event, labelled or not
    learns_unlabelled: ClassVar[bool] = False
    #: a partition learns one kind of label (regression mixes ints and floats)
    one_label_kind: ClassVar[bool] = True
    #: the labels are classes, at most STREAMAPP_MAX_CLASSES of them
    counts_classes: ClassVar[bool] = False
    #: the prediction the rolling metric of the promotion rule is fed
    rolling_feed: ClassVar[str]

    def __reduce__(self) -> tuple[type[Task], tuple[()]]:
        return type(self), ()  # pickled as its class: snapshots hold no task state

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def predict(self, model: Any, x: dict[str, Feature], class_from_proba: bool) -> dict[str, Any]:
        raise NotImplementedError

    def learn(self, model: Any, x: dict[str, Feature], y: Any) -> None:
        model.learn_one(x, y)

    def error(self, y_true: Any, prediction: dict[str, Any]) -> float | None:
        """What the drift detector watches; None: nothing to watch."""
        return None

    def metric_set(self) -> list[Tracked]:
        raise NotImplementedError

    def rolling_metric(self, window: int) -> tuple[str, Any]:
        """What the promotion rule compares over the last `window` labels."""
        raise NotImplementedError

    def check_label(self, y: Label, kind: str) -> None:
        """BadEvent unless `y` (of label_kind `kind`) is a label of this task."""
        if kind not in self.label_kinds:
            raise BadEvent(
                f"label {y!r:.40} is a {kind}; a {self.name} partition learns "
                f"{' or '.join(self.label_kinds)}{self.hint}"
            )
        if self.true_or_false and kind == "int" and y not in (0, 1):
            raise BadEvent(f"label {y!r} of a {self.name} partition must be true/false or 1/0")

    hint: ClassVar[str] = ""
    #: binary and anomaly labels: true/false, or 1/0 (ROCAUC's positive class is True)
    true_or_false: ClassVar[bool] = False


class _Classification(Task):
    def predict(self, model: Any, x: dict[str, Feature], class_from_proba: bool) -> dict[str, Any]:
        proba = model.predict_proba_one(x)
        if not class_from_proba:
            return {"class": model.predict_one(x), "proba": proba}
        label = max(proba, key=proba.get) if proba else None
        return {"class": label, "proba": proba}

    def error(self, y_true: Any, prediction: dict[str, Any]) -> float | None:
        return float(prediction["class"] != y_true)


class Binary(_Classification):
    name = "binary"
    label_kinds = ("bool", "int")
    true_or_false = True
    rolling_feed = "proba"
    hint = " (named classes need STREAMAPP_TASK=multiclass)"

    def metric_set(self) -> list[Tracked]:
        return [
            Tracked("rocauc", metrics.ROCAUC(), "proba"),
            Tracked("accuracy", metrics.Accuracy(), "class"),
            Tracked("f1", metrics.F1(), "class"),
            Tracked("logloss", metrics.LogLoss(), "proba"),
        ]

    def rolling_metric(self, window: int) -> tuple[str, Any]:
        # ROCAUC: fraud is rare, accuracy would favour a model that never alerts
        return "rocauc", metrics.RollingROCAUC(window_size=window)


class Multiclass(_Classification):
    name = "multiclass"
    label_kinds = ("bool", "int", "str")
    counts_classes = True
    rolling_feed = "class"

    def metric_set(self) -> list[Tracked]:
        return [
            Tracked("accuracy", metrics.Accuracy(), "class"),
            Tracked("macro_f1", metrics.MacroF1(), "class"),
            Tracked("cross_entropy", metrics.CrossEntropy(), "proba"),
        ]

    def rolling_metric(self, window: int) -> tuple[str, Any]:
        return "accuracy", utils.Rolling(metrics.Accuracy, window_size=window)


class Regression(Task):
    name = "regression"
    label_kinds = ("int", "float")
    one_label_kind = False
    rolling_feed = "value"

    def predict(self, model: Any, x: dict[str, Feature], class_from_proba: bool) -> dict[str, Any]:
        return {"value": model.predict_one(x)}

    def error(self, y_true: Any, prediction: dict[str, Any]) -> float | None:
        value = prediction.get("value")
        return None if value is None else abs(float(y_true) - float(value))

    def metric_set(self) -> list[Tracked]:
        return [
            Tracked("mae", metrics.MAE(), "value"),
            Tracked("rmse", metrics.RMSE(), "value"),
            Tracked("r2", metrics.R2(), "value"),
        ]

    def rolling_metric(self, window: int) -> tuple[str, Any]:
        return "mae", utils.Rolling(metrics.MAE, window_size=window)


class Anomaly(Task):
    name = "anomaly"
    label_kinds = ("bool", "int")
    true_or_false = True
    learns_unlabelled = True
    rolling_feed = "score"

    def predict(self, model: Any, x: dict[str, Feature], class_from_proba: bool) -> dict[str, Any]:
        return {"score": model.score_one(x)}

    def learn(self, model: Any, x: dict[str, Feature], y: Any) -> None:
        model.learn_one(x)

    def metric_set(self) -> list[Tracked]:
        return [Tracked("rocauc", metrics.ROCAUC(), "score")]

    def rolling_metric(self, window: int) -> tuple[str, Any]:
        return "rocauc", metrics.RollingROCAUC(window_size=window)


TASKS: dict[str, Task] = {task.name: task for task in (Binary(), Multiclass(), Regression(), Anomaly())}


def task_named(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})") from None
