"""Models: the paper's presets by name, or any River estimator from 'package.module:factory'.

A model spec is resolved once at start, so an unknown preset or a factory that returns something
other than a River estimator stops the worker with a message instead of failing on the first event.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

from river import anomaly, base, compose, forest, linear_model, naive_bayes, preprocessing, tree
from river import ensemble as river_ensemble

from streamapp.imports import load_callable
from streamapp.settings import ConfigError


def _hoeffding_tree() -> base.Estimator:
    return tree.HoeffdingTreeClassifier(max_depth=10)


def _numeric() -> base.Estimator:
    """Numeric features only (booleans count as 0/1): scalers and HalfSpaceTrees take no strings."""
    return compose.SelectType(numbers.Number)


def _scaled_and_one_hot() -> base.Estimator:
    """Standardised numbers beside one-hot strings, for linear models and naive Bayes."""
    return (_numeric() | preprocessing.StandardScaler()) + (
        compose.SelectType(str) | preprocessing.OneHotEncoder()
    )


def _half_space_trees() -> base.Estimator:
    return _numeric() | preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)


def _adaptive_random_forest() -> base.Estimator:
    return forest.ARFClassifier(seed=42)


def _srp() -> base.Estimator:
    return river_ensemble.SRPClassifier(model=tree.HoeffdingTreeClassifier(max_depth=10), seed=42)


def _hoeffding_adaptive_tree() -> base.Estimator:
    return tree.HoeffdingAdaptiveTreeClassifier(max_depth=10, seed=42)


def _logistic_regression() -> base.Estimator:
    return _scaled_and_one_hot() | linear_model.LogisticRegression()


def _naive_bayes() -> base.Estimator:
    return _scaled_and_one_hot() | naive_bayes.GaussianNB()


def _linear_regression() -> base.Estimator:
    return _scaled_and_one_hot() | linear_model.LinearRegression()


PRESETS: dict[str, Callable[[], base.Estimator]] = {
    "hoeffding_tree": _hoeffding_tree,
    "half_space_trees": _half_space_trees,
    "adaptive_random_forest": _adaptive_random_forest,
    "srp": _srp,
    "hoeffding_adaptive_tree": _hoeffding_adaptive_tree,
    "logistic_regression": _logistic_regression,
    "naive_bayes": _naive_bayes,
    "linear_regression": _linear_regression,
}

TASKS = ("binary", "multiclass", "regression", "anomaly")


@dataclass(frozen=True)
class ModelSpec:
    """A validated recipe for fresh models: every partition starts from `build()`."""

    name: str
    task: str
    build: Callable[[], base.Estimator]


def infer_task(model: base.Estimator) -> str:
    """The learning task of a River estimator (River pipelines answer isinstance for their last step)."""
    if isinstance(model, base.AnomalyDetector):
        return "anomaly"
    if isinstance(model, base.Classifier):
        return "binary"
    if isinstance(model, base.Regressor):
        return "regression"
    raise ConfigError(
        f"{type(model).__name__} is a River estimator but not a classifier, regressor or anomaly "
        "detector; streamapp cannot score with it"
    )


def resolve(spec: str, task: str = "auto") -> ModelSpec:
    """Turn STREAMAPP_MODEL (+ STREAMAPP_TASK) into a ModelSpec, building one model to check it."""
    factory = PRESETS.get(spec)
    if factory is None:
        if ":" not in spec:
            raise ConfigError(
                f"unknown model preset {spec!r}; presets: {', '.join(PRESETS)}; "
                "or give an import path 'package.module:factory'"
            )
        factory = load_callable(spec, "model factory", f"neither a preset ({', '.join(PRESETS)}) nor ")
    try:
        model = factory()
    except Exception as exc:
        raise ConfigError(f"model factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, base.Estimator):
        raise ConfigError(
            f"model factory {spec!r} returned {type(model).__name__}, not a River estimator "
            "(river.base.Estimator)"
        )
    inferred = infer_task(model)
    if task == "auto":
        task = inferred
    elif (task == "multiclass" and inferred != "binary") or (task != "multiclass" and task != inferred):
        raise ConfigError(f"STREAMAPP_TASK={task} does not fit {type(model).__name__} ({inferred})")
    return ModelSpec(name=spec, task=task, build=factory)


def resolve_challengers(names: tuple[str, ...], champion: ModelSpec) -> list[ModelSpec]:
    """STREAMAPP_CHALLENGERS: each must do the champion's task, or their metrics would not compare."""
    specs = []
    for name in names:
        spec = resolve(name, "multiclass" if champion.task == "multiclass" else "auto")
        if spec.task != champion.task:
            raise ConfigError(
                f"challenger {name!r} is a {spec.task} model but the champion {champion.name!r} "
                f"does {champion.task}: challengers must do the champion's task"
            )
        specs.append(spec)
    return specs


def describe(model: base.Estimator) -> str:
    """A short human name: 'MinMaxScaler | HalfSpaceTrees' for a pipeline."""
    if isinstance(model, compose.Pipeline):
        return " | ".join(type(step).__name__ for step in model.steps.values())
    return type(model).__name__
