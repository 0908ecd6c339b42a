"""The per-message path with records of their own shape (STREAMAPP_ID_FIELD, _LABEL_FIELD,
_FEATURES empty, _EXCLUDE, _TIMESTAMP_FIELD): whatever arrives, nothing escapes, every offset is
applied or dead-lettered, and the model equals River's on the records applied, read here by the
test's own account of the mapping (not streamapp's code)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from streamapp import models, records
from tests.oracle import river_on_log
from tests.processor_harness import Harness

MAPPING = {
    "id_field": "txn",
    "label_field": "fraud",
    "features": "",
    "exclude": "card,meta.trace",
    "timestamp_field": "t",
    "timestamp_unit": "ms",
    # Record times here go back to 1970: no age bound, which this oracle does not model (a
    # waiting event older than it would expire before its label, by design).
    "pending_labels_max_age": "0",
}
SKIP = {"id": "\x00not-for-the-oracle"}

plain = st.one_of(st.floats(-1e6, 1e6), st.integers(-100, 100), st.text(max_size=3), st.booleans(), st.none())
wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.text(max_size=300),
    st.just([1, 2]),
    st.just({"deep": {"er": {"est": 1}}}),
)


def mostly(usable: st.SearchStrategy[Any], broken: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine in ten usable (one_of would draw the two alike): the models learn, and can break."""
    return st.integers(0, 9).flatmap(lambda n: broken if n == 0 else usable)


values = mostly(plain, wild)
record_ids = mostly(st.sampled_from(["a", "b", "c", "d", 7, 8]), st.sampled_from(["", True, None]))


@st.composite
def bank_records(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event"] * 5 + ["label"] * 2 + ["junk"]))
    if kind == "junk":
        return draw(st.one_of(st.binary(max_size=50).map(bytes), st.just(b"[1]"), st.just(b"{}")))
    doc: dict[str, Any] = {"txn": draw(record_ids)}
    if kind == "event":
        doc["card"] = draw(st.text(max_size=4))
        # Each field keeps its kind, mostly (a partition refuses a feature that changes it).
        doc["amount"] = draw(mostly(st.floats(-1e6, 1e6) | st.integers(-100, 100) | st.none(), values))
        doc["merchant"] = draw(mostly(st.sampled_from(["fuel", "grocery", "web"]) | st.none(), values))
        doc["meta"] = {
            "trace": draw(values),
            "channel": draw(mostly(st.sampled_from(["pos", "ecom"]), values)),
        }
        if draw(st.booleans()):
            doc["t"] = draw(st.one_of(st.integers(0, 2 * 10**12), st.text(max_size=5), st.none()))
    if kind == "label" or draw(st.booleans()):
        doc["fraud"] = draw(mostly(st.booleans(), st.sampled_from([None, [True], 2])))
    return json.dumps(doc).encode()


def as_contract(doc: dict[str, Any]) -> dict[str, Any]:
    """The record as the contract says it: what the settings above mean, written out by hand."""
    x: dict[str, Any] = {}

    def walk(fields: dict[str, Any], prefix: str) -> None:
        for name, value in fields.items():
            path = prefix + name
            if path in ("txn", "fraud", "t", "card", "meta.trace") or value is None:
                continue
            if isinstance(value, dict):
                walk(value, path + ".")
            else:
                x[path] = value

    walk(doc, "")
    out: dict[str, Any] = {"id": str(doc["txn"])}
    if set(doc) <= {"txn", "fraud", "t"} and doc.get("fraud") is not None:
        return {**out, "y": doc["fraud"]}  # a late label
    out["x"] = x
    if doc.get("fraud") is not None:
        out["y"] = doc["fraud"]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(bank_records(), min_size=1, max_size=50))
@example(  # found by Hypothesis: an id waits, a labelled event reuses it, then a label for the id
    stream=[
        b'{"txn": "a", "card": "", "amount": null, "merchant": "fuel", "meta": {"channel": "pos"}}',
        b'{"txn": "a", "card": "", "amount": 0.0, "meta": {"channel": "pos"}, "fraud": false}',
        b'{"txn": "a", "fraud": true}',
        b'{"txn": "a", "card": "", "amount": 0.0, "merchant": "fuel", "meta": {"channel": "pos"}}',
    ]
)
def test_records_of_their_own_shape_are_applied_or_dead_lettered_and_the_model_equals_river(
    stream: list[bytes],
) -> None:
    note(repr(stream))
    harness = Harness.build(model="hoeffding_tree", **MAPPING)
    harness.feed(stream)  # raises if anything escapes
    state = harness.state
    refused = {offset for offset, _ in harness.deadletters}
    assert state.offset == len(stream) - 1, "every offset was applied or dead-lettered"
    assert state.deadletters == len(refused) == len(harness.deadletters)

    docs: list[dict[str, Any]] = []
    waiting: set[str] = set()
    for offset, value in enumerate(stream):
        doc = SKIP if offset in refused else as_contract(orjson.loads(value))
        if "x" in doc:
            waiting.discard(doc["id"])
            if doc.get("y") is None:
                waiting.add(doc["id"])
        elif doc.get("id") in waiting:
            waiting.discard(doc["id"])
        else:
            doc = SKIP
        docs.append(doc)
    scores, expected, _ = river_on_log(docs, models.resolve("hoeffding_tree").build, ["rocauc", "accuracy"])
    ours = {p["offset"]: p["proba"] for p in harness.predictions}
    assert ours == {offset: orjson.loads(records.encode(p)) for offset, p in expected.items()}
    for name, score in scores.items():
        assert state.metrics.values()[name] == pytest.approx(score, abs=1e-9, nan_ok=True), name
