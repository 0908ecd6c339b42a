"""Prequential metrics of one partition, updated exactly as River's progressive validation does.

River's `evaluate.progressive_val_score` feeds each metric either the predicted class (metrics
that require labels) or the probabilities (ROCAUC, log loss), and skips the update while the
model predicts nothing (None or {}). Doing the same makes a partition's metrics equal River's
own oracle on that partition's sub-stream.
"""

from __future__ import annotations

from typing import Any

from streamapp.tasks import Task


class PrequentialMetrics:
    """The metric set of one task; pickled with the model in every snapshot."""

    def __init__(self, task: Task) -> None:
        self._tracked = task.metric_set()

    def update(self, y_true: Any, prediction: dict[str, Any]) -> None:
        """Update every metric whose input is in `prediction` (keys: class, proba, value, score)."""
        for tracked in self._tracked:
            y_pred = prediction.get(tracked.feed)
            if y_pred is None or y_pred == {}:
                continue
            tracked.metric.update(y_true, y_pred)

    def values(self) -> dict[str, float]:
        return {tracked.name: float(tracked.metric.get()) for tracked in self._tracked}

    def lead_over(self, other: PrequentialMetrics) -> dict[str, float]:
        """How far these metrics are ahead of `other`'s (the same task's), signed so that a
        positive lead is better whichever way the metric goes (ROCAUC up, MAE down): one alert
        rule then fits every metric."""
        theirs = other.values()
        return {
            tracked.name: (1.0 if tracked.metric.bigger_is_better else -1.0)
            * (float(tracked.metric.get()) - theirs[tracked.name])
            for tracked in self._tracked
            if tracked.name in theirs
        }
