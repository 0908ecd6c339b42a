"""River's own progressive validation, the independent oracle for a partition's model and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from river import base, evaluate, metrics

METRICS: dict[str, Callable[[], metrics.base.Metric]] = {
    "rocauc": metrics.ROCAUC,
    "accuracy": metrics.Accuracy,
    "f1": metrics.F1,
    "logloss": metrics.LogLoss,
    "mae": metrics.MAE,
    "rmse": metrics.RMSE,
    "r2": metrics.R2,
}


def river_scores(
    stream: Sequence[tuple[dict[str, Any], Any]],
    build: Callable[[], base.Estimator],
    names: Sequence[str],
    delay: int | None = None,
) -> dict[str, float]:
    """Each metric from its own progressive_val_score run on a fresh model (River picks the
    prediction each metric needs: class, probabilities or score)."""
    scores = {}
    for name in names:
        result = evaluate.progressive_val_score(stream, build(), METRICS[name](), delay=delay)
        scores[name] = float(result.get())
    return scores


def river_predictions(
    stream: Sequence[tuple[dict[str, Any], Any]], build: Callable[[], base.Estimator], metric: str
) -> list[Any]:
    """The prediction River's progressive validation makes at every step."""
    steps = evaluate.iter_progressive_val_score(
        stream, build(), METRICS[metric](), step=1, yield_predictions=True
    )
    return [step["Prediction"] for step in steps]
