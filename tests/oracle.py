"""River's own progressive validation, the independent oracle for a partition's model and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from river import base, evaluate, metrics
from river.stream import simulate_qa as stream_qa

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


class _Question(dict[str, Any]):
    """Features that remember the offsets of their event and label (River deep-copies x while
    it holds a question, and a copy keeps these attributes)."""

    asked: int
    answered: int


def river_on_log(
    docs: Sequence[dict[str, Any] | None],
    build: Callable[[], base.Estimator],
    names: Sequence[str],
    predict: str = "predict_proba_one",
) -> tuple[dict[str, float], dict[int, Any], base.Estimator]:
    """River on a partition's log as it arrived: each event (at its offset) is a question, its
    label the answer at the offset of the label, inline or a later label record. Returns each
    metric from its own `progressive_val_score` run, the probabilities River's question and
    answer loop predicts for each event's offset, and the model that loop trained."""
    stream: list[tuple[_Question, Any]] = []
    position: dict[str, int] = {}  # event id -> index in stream
    for offset, doc in enumerate(docs):
        if doc is None:
            continue  # a record the worker refuses (dead-letters): no step of River's
        if "x" in doc:
            x = _Question(doc["x"])
            x.asked = x.answered = offset
            position[doc["id"]] = len(stream)
            stream.append((x, doc.get("y")))
        elif doc["id"] in position:
            x, _ = stream[position[doc["id"]]]
            stream[position[doc["id"]]] = (x, doc["y"])
            x.answered = offset

    def moment(x: _Question) -> int:
        return x.asked

    def delay(x: _Question, y: Any) -> int:
        return x.answered - x.asked

    scores = {
        name: float(
            evaluate.progressive_val_score(stream, build(), METRICS[name](), moment=moment, delay=delay).get()
        )
        for name in names
    }
    model, predictions = build(), {}
    for _, x, y in stream_qa(stream, moment, delay):
        if y is None:
            predictions[x.asked] = getattr(model, predict)(x)
        else:
            model.learn_one(x, y)
    return scores, predictions, model
