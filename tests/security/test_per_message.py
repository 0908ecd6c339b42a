"""Whatever arrives, the per-message path neither raises nor lets a failing message change a model.

Hypothesis feeds arbitrary bytes, arbitrary JSON and arbitrary events, labels and control events
through the worker's own batch handler (tests/processor_harness.py). For every example: no
exception escapes, every offset is either applied or dead-lettered (never both, never neither),
and the partition's metrics and every prediction equal River's progressive validation on the
messages that were applied, with the labels that the partition accepted.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp import control, models, records
from streamapp.records import Control
from tests.oracle import river_on_log
from tests.processor_harness import Harness

TOL = 1e-9
PRESETS = {
    "hoeffding_tree": ("binary", ["rocauc", "accuracy", "logloss"], "predict_proba_one"),
    "logistic_regression": ("binary", ["rocauc", "accuracy", "logloss"], "predict_proba_one"),
    "naive_bayes": ("binary", ["rocauc", "accuracy"], "predict_proba_one"),
    "linear_regression": ("regression", ["mae", "rmse"], "predict_one"),
}
NAMES = ["amount", "hour", "merchant", "online"]

wild_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 1e15, 1e16, 5e-324, 2**63, -(2**63) - 1]),
)
plain = st.one_of(st.floats(-1e6, 1e6), st.integers(-100, 100), st.text(max_size=3), st.booleans())
junk = st.one_of(wild_numbers, st.text(max_size=300), st.none(), st.just([1]), st.just({}))
values = st.one_of(plain, plain, plain, plain, plain, junk)  # mostly usable: models learn, can break
labels = st.one_of(
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 1, 2, -1, 0.5, 1e308, 1e16, "yes", "no", "", None, [True], {"a": 1}]),
    st.integers(),
    st.floats(allow_nan=True),
)
names = st.one_of(*[st.just(name) for name in NAMES * 5], st.text(max_size=300))
features = st.dictionaries(names, values, max_size=5)
ids = st.sampled_from(["e1", "e2", "e3", "e4", "e5"] * 8 + ["", "i" * 300])


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """One record value (and headers): any of the ways a message can be right or wrong."""
    kind = draw(st.sampled_from(["event"] * 6 + ["label"] * 2 + ["bytes", "json", "control"]))
    if kind == "bytes":
        return draw(st.one_of(st.none(), st.binary(max_size=200))), []
    if kind == "json":
        doc = draw(
            st.recursive(
                st.none() | st.booleans() | wild_numbers | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
                max_leaves=10,
            )
        )
        return json.dumps(doc).encode(), []
    if kind == "control":
        doc = {
            "id": draw(ids) or "c",
            "control": "promote",
            "model": draw(st.sampled_from(["m", "naive_bayes"])),
        }
        headers = []
        if draw(st.booleans()):  # signed, for this partition or another, maybe altered after
            signed = Control(doc["id"], "promote", model=doc["model"])
            partition = draw(st.sampled_from([0, 0, 1]))
            headers = control.sign(HARNESS_SIGNER[0], partition, signed, 2**40)
            if draw(st.booleans()):
                doc["model"] = "altered"
        return json.dumps(doc).encode(), headers
    doc: dict[str, Any] = {"id": draw(ids)}
    if kind == "event":
        doc["x"] = draw(features)
    if kind == "label" or draw(st.booleans()):
        doc["y"] = draw(labels)
    return json.dumps(doc).encode(), []


HARNESS_SIGNER: list[Any] = []  # the signer of the example's harness, for signed controls
SKIP = {"id": "\x00not-for-the-oracle"}  # a refused message, a control or an unanswerable label


def oracle_log(harness: Harness, sent: list[bytes | None]) -> list[dict[str, Any]]:
    """The log as River's oracle reads it, one doc per offset: the applied events, and the late
    labels that answered a waiting event (a label for an id not waiting is only counted, by
    contract); everything else is a doc the oracle ignores."""
    refused = {offset for offset, _ in harness.deadletters}
    docs: list[dict[str, Any]] = []
    waiting: set[str] = set()
    for offset, value in enumerate(sent):
        doc = SKIP if offset in refused else orjson.loads(value or b"null")
        if "x" in doc:
            waiting.discard(doc["id"])
            if doc.get("y") is None:
                waiting.add(doc["id"])
        elif doc.get("id") in waiting and "control" not in doc:
            waiting.discard(doc["id"])
        else:
            doc = SKIP
        docs.append(doc)
    return docs


@pytest.mark.parametrize("preset", sorted(PRESETS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(messages(), min_size=1, max_size=60))
def test_every_message_is_applied_or_dead_lettered_and_the_model_equals_river(
    preset: str, stream: list[tuple[bytes | None, list[tuple[str, bytes]]]]
) -> None:
    _, metrics, predict = PRESETS[preset]
    harness = Harness.build(model=preset)
    HARNESS_SIGNER[:] = [harness.processor.signer]
    sent = [value for value, _ in stream]
    harness.feed(sent, [headers for _, headers in stream])  # raises if anything escapes

    state = harness.state
    refused = [offset for offset, _ in harness.deadletters]
    assert len(refused) == len(set(refused)), "a message is dead-lettered once"
    assert state.offset == len(sent) - 1, "every offset was applied or dead-lettered"
    assert state.deadletters == len(refused) and state.model_errors == 0
    assert all(reason for _, reason in harness.deadletters)

    docs = oracle_log(harness, sent)
    scores, expected, _ = river_on_log(docs, models.resolve(preset).build, metrics, predict)
    ours = {
        p["offset"]: p["proba" if predict == "predict_proba_one" else "value"] for p in harness.predictions
    }
    assert set(ours) == {offset for offset, doc in enumerate(docs) if "x" in doc}, "each applied event, once"
    assert ours == {offset: orjson.loads(records.encode(p)) for offset, p in expected.items()}
    values = state.metrics.values()
    for name in metrics:
        assert values[name] == pytest.approx(scores[name], abs=TOL, nan_ok=True), name
