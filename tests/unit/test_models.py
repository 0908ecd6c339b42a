"""Presets and factories resolve at start; anything else fails with a clear message."""

import pytest
from river import base, linear_model

from streamapp import models
from streamapp.settings import ConfigError


def not_an_estimator() -> object:
    return object()


def broken_factory() -> base.Estimator:
    raise RuntimeError("boom")


def regressor() -> base.Estimator:
    return linear_model.LinearRegression()


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("hoeffding_tree", "binary"),
        ("half_space_trees", "anomaly"),
        ("adaptive_random_forest", "binary"),
        ("srp", "binary"),
        ("hoeffding_adaptive_tree", "binary"),
        ("logistic_regression", "binary"),
        ("naive_bayes", "binary"),
        ("linear_regression", "regression"),
    ],
)
def test_presets_build_fresh_models_of_their_task(name: str, task: str) -> None:
    spec = models.resolve(name)
    assert spec.task == task
    assert spec.build() is not spec.build()


def test_paper_hyperparameters() -> None:
    assert models.resolve("hoeffding_tree").build().max_depth == 10
    assert (
        models.describe(models.resolve("half_space_trees").build())
        == "SelectType | MinMaxScaler | HalfSpaceTrees"
    )


def test_factory_by_import_path() -> None:
    spec = models.resolve(f"{__name__}:regressor")
    assert spec.task == "regression"
    assert isinstance(spec.build(), linear_model.LinearRegression)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_preset", "unknown model preset 'no_such_preset'; presets: hoeffding_tree"),
        ("no.such.module:factory", "cannot import 'no.such.module'"),
        (f"{__name__}:missing", "has no callable 'missing'"),
        (f"{__name__}:not_an_estimator", "returned object, not a River estimator"),
        (f"{__name__}:broken_factory", "raised RuntimeError: boom"),
    ],
)
def test_bad_model_specs_fail_clearly(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        models.resolve(spec)
    assert message in str(err.value)


def test_task_override_must_fit_the_model() -> None:
    assert models.resolve("hoeffding_tree", "multiclass").task == "multiclass"
    with pytest.raises(ConfigError, match="does not fit"):
        models.resolve("hoeffding_tree", "regression")
