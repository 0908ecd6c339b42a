"""A model that raises half-way through learning: the partition is put back as it was before
that record (its snapshot, replayed from the log), and the record is dead-lettered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamapp import datasets
from tests.custom_models import plain_tree
from tests.oracle import river_on_log
from tests.processor_harness import Harness

BOOM = 70


def log_with_a_boom(count: int) -> list[bytes]:
    return [
        orjson.dumps({"id": s.id, "x": {**s.x, "boom": int(i == BOOM)}, "y": s.y})
        for i, s in enumerate(datasets.load("phishing", limit=count))
    ]


@pytest.mark.parametrize("snapshot_every", ["25", "100000"])  # from a snapshot, or from the start
def test_a_half_learned_record_is_rewound_replayed_and_dead_lettered(snapshot_every: str) -> None:
    harness = Harness.build(model="tests.custom_models:exploding_tree", snapshot_every_events=snapshot_every)
    values = log_with_a_boom(120)
    harness.feed(values)  # stops at the boom
    rewound = harness.state
    assert rewound.offset < BOOM and rewound.model_errors == 1
    assert not harness.deadletters, "dead-lettered when the replay reaches it"
    assert harness.seeks == [rewound.offset + 1], "the consumer is moved back to the rewound state"
    harness.fetch(BOOM)  # records fetched before the seek took effect: gaps, not learned
    assert harness.state.offset == rewound.offset
    harness.fetch(harness.seeks[0])

    state = harness.state
    assert state.offset == len(values) - 1
    assert harness.deadletters == [(BOOM, "model error: RuntimeError: boom after learning")]
    assert state.model_errors == 1, "the record is not learned again: its gap kept it poisoned"
    docs: list[dict[str, Any]] = [orjson.loads(v) for v in values]
    docs[BOOM] = {"id": "\x00dead-lettered"}
    scores, expected, model = river_on_log(docs, plain_tree, ["rocauc", "accuracy", "logloss"])
    assert {k: state.metrics.values()[k] for k in scores} == pytest.approx(scores, abs=1e-9)
    last = {p["offset"]: p for p in harness.predictions}  # the replay's, where there were two
    assert {o: p["proba"] for o, p in last.items()} == {
        o: orjson.loads(orjson.dumps(p, option=orjson.OPT_NON_STR_KEYS)) for o, p in expected.items()
    }
    assert all(last[o]["replayed"] for o in range(rewound.offset + 1, BOOM))
    assert not any(last[o]["replayed"] for o in range(BOOM + 1, len(values)))
    probe = docs[-1]["x"]
    assert state.model.predict_proba_one(probe) == model.predict_proba_one(probe)
