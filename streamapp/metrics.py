"""Prequential metrics of one partition, updated exactly as River's progressive validation does.

River's `evaluate.progressive_val_score` feeds each metric either the predicted class (metrics
that require labels) or the probabilities (ROCAUC, log loss), and skips the update while the
model predicts nothing (None or {}). Doing the same makes a partition's metrics equal River's
own oracle on that partition's sub-stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from river import metrics


@dataclass
class _Tracked:
    name: str
    metric: metrics.base.Metric
    #: which prediction the metric is fed: "class", "proba", "value" or "score"
    feed: str


def _for_task(task: str) -> list[_Tracked]:
    if task == "binary":
        return [
            _Tracked("rocauc", metrics.ROCAUC(), "proba"),
            _Tracked("accuracy", metrics.Accuracy(), "class"),
            _Tracked("f1", metrics.F1(), "class"),
            _Tracked("logloss", metrics.LogLoss(), "proba"),
        ]
    if task == "multiclass":
        return [
            _Tracked("accuracy", metrics.Accuracy(), "class"),
            _Tracked("macro_f1", metrics.MacroF1(), "class"),
            _Tracked("cross_entropy", metrics.CrossEntropy(), "proba"),
        ]
    if task == "regression":
        return [
            _Tracked("mae", metrics.MAE(), "value"),
            _Tracked("rmse", metrics.RMSE(), "value"),
            _Tracked("r2", metrics.R2(), "value"),
        ]
    if task == "anomaly":
        return [_Tracked("rocauc", metrics.ROCAUC(), "score")]
    raise ValueError(f"unknown task {task!r}")


class PrequentialMetrics:
    """The metric set of one task; pickled with the model in every snapshot."""

    def __init__(self, task: str) -> None:
        self.task = task
        self._tracked = _for_task(task)

    def update(self, y_true: Any, prediction: dict[str, Any]) -> None:
        """Update every metric whose input is in `prediction` (keys: class, proba, value, score)."""
        for tracked in self._tracked:
            y_pred = prediction.get(tracked.feed)
            if y_pred is None or y_pred == {}:
                continue
            tracked.metric.update(y_true, y_pred)

    def values(self) -> dict[str, float]:
        return {tracked.name: float(tracked.metric.get()) for tracked in self._tracked}
