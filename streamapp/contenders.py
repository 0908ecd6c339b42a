"""The models of one partition: a champion whose predictions are emitted, and challengers that
score and learn the same events in its shadow.

Each contender keeps its own metrics and drift detector, fed exactly as if it ran alone, so its
figures equal River's progressive validation of that model alone. Promotion only changes which
one is emitted: by an authenticated request (an event in the partition's log) or by a rule over
the last N labels, a deterministic function of the log, so replay reproduces both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from river import base, compose

from streamapp.drift import DriftMonitor
from streamapp.metrics import PrequentialMetrics
from streamapp.models import ModelSpec, describe
from streamapp.records import Feature
from streamapp.tasks import task_named

log = logging.getLogger(__name__)


def _predicts_class_from_proba(model: base.Estimator) -> bool:
    """True when predict_one is River's default argmax of predict_proba_one (saves a second pass)."""
    last: Any = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return getattr(type(last), "predict_one", None) is base.Classifier.predict_one


class Contender:
    """One model with its own metrics, drift detector and rolling metric for the promotion rule."""

    def __init__(self, spec: ModelSpec, window: int) -> None:
        self.name = spec.name
        self.task = task_named(spec.task)
        self.model: Any = spec.build()
        self.model_class = describe(self.model)
        self.metrics = PrequentialMetrics(self.task)
        self.drift = DriftMonitor()
        self.learned = 0
        self.resets = 0
        self.labels = 0
        self.rolling_name, self.in_window = "", 0
        self.rolling: Any = None
        self.watch(window)
        self.class_from_proba = _predicts_class_from_proba(self.model)

    def watch(self, window: int) -> None:
        """Track the promotion rule's metric over the last `window` labels (0: not at all); a
        changed window starts afresh."""
        if window != (self.rolling.window_size if self.rolling is not None else 0):
            self.rolling_name, self.rolling = self.task.rolling_metric(window) if window else ("", None)
            self.in_window = 0

    def predict(self, x: dict[str, Feature]) -> dict[str, Any]:
        """Score without learning: {'class', 'proba'} | {'value'} | {'score'} by task."""
        return self.task.predict(self.model, x, self.class_from_proba)

    def learn(self, x: dict[str, Feature], y: Any) -> None:
        self.task.learn(self.model, x, y)
        self.learned += 1

    def score(self, y_true: Any, prediction: dict[str, Any], offset: int, reset_on_drift: bool) -> bool:
        """A label meets this model's prediction: metrics, drift and the rolling metric see it.

        True when it completed a drift detection. With `reset_on_drift` a rise of the error
        replaces the model by a fresh clone (River's idiom), which then learns the event that
        completed the detection; a fall (the model improved) keeps it.
        """
        self.metrics.update(y_true, prediction)
        self.labels += 1
        if self.rolling is not None:
            y_pred = prediction.get(self.task.rolling_feed)
            if y_pred is not None and y_pred != {}:
                self.rolling.update(y_true, y_pred)
                self.in_window += 1
        if not self.drift.update(self.task.error(y_true, prediction), offset):
            return False
        if reset_on_drift and self.drift.rose:
            self.model = self.model.clone()
            self.resets += 1
        return True

    def rolling_value(self) -> float | None:
        return None if self.rolling is None else float(self.rolling.get())

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_class": self.model_class,
            "learned": self.learned,
            "labels": self.labels,
            "metrics": self.metrics.values(),
            "rolling": {self.rolling_name: self.rolling_value()} if self.rolling is not None else None,
            "drift": {**self.drift.summary(), "model_resets": self.resets},
        }


def better_by(challenger: Contender, champion: Contender, margin: float) -> float | None:
    """How much better the challenger's rolling metric is than the champion's, when by more than
    `margin` (in the metric's units); None otherwise or while either window is not full."""
    if challenger.rolling is None or champion.rolling is None:
        return None
    if min(challenger.in_window, champion.in_window) < challenger.rolling.window_size:
        return None
    ours, theirs = challenger.rolling_value(), champion.rolling_value()
    assert ours is not None and theirs is not None
    gain = ours - theirs if champion.rolling.bigger_is_better else theirs - ours
    return gain if gain > margin else None


def align(
    contenders: Sequence[Contender], champion: int, specs: Sequence[ModelSpec], window: int, partition: int
) -> tuple[list[Contender], list[int | None], int]:
    """Fit a restored partition's contenders to the configured models: keep those still
    configured (with their history), start the new ones here, drop the others. The champion stays
    champion if it is still configured, else the first spec takes over. Returns the contenders,
    for each the index it had (None: new), and the champion's index."""
    have = {c.name: i for i, c in enumerate(contenders)}
    for name in set(have) - {s.name for s in specs}:
        log.warning("partition %d: model %r is no longer configured, dropped", partition, name)
    kept = []
    for spec in specs:
        if spec.name in have:
            kept.append(contenders[have[spec.name]])
        else:
            kept.append(Contender(spec, window))
            log.warning("partition %d: model %r joins", partition, spec.name)
    names = [c.name for c in kept]
    name = contenders[champion].name
    return kept, [have.get(n) for n in names], names.index(name) if name in names else 0


def log_drift(partition: int, contender: Contender, offset: int, reset: bool) -> None:
    rose = contender.drift.rose
    log.warning(
        "partition %d: DRIFT detected at offset %d (ADWIN, model %r, error %s)%s",
        partition,
        offset,
        contender.name,
        "rose" if rose else "fell",
        ": model reset" if reset and rose else "",
    )
