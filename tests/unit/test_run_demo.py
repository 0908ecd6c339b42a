"""`make run` (tools/run_demo.py): the settings it adds, the promotions it finds in /models and the
lines it prints. The documents are shaped as a worker's /models answers (copied from one serving
the card stream with a challenger and the promotion rule)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from streamapp import changes, models
from streamapp.partition import PartitionConfig, PartitionState

ROOT = Path(__file__).resolve().parents[2]
OWNER = "http://127.0.0.1:6066"
T0 = 1796009170.0  # when the demo started


def _run_demo() -> ModuleType:
    """tools/run_demo.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("run_demo", ROOT / "tools" / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


demo = _run_demo()


def _metrics(rocauc: float) -> dict[str, float]:
    return {"rocauc": rocauc, "accuracy": 0.9886, "f1": 0.6111, "logloss": 0.2196}


DRIFT = {"detector": "ADWIN", "detections": 0, "rises": 0, "recent": [], "error_mean": 0.0114}


def _model(name: str, role: str, rocauc: float, rolling: float, learned: int) -> dict[str, Any]:
    return {
        "name": name,
        "model_class": "HoeffdingTreeClassifier"
        if name == "hoeffding_tree"
        else "TransformerUnion | LogisticRegression",
        "learned": learned,
        "labels": learned,
        "metrics": _metrics(rocauc),
        "rolling": {"rocauc": rolling},
        "drift": {**DRIFT, "model_resets": 0},
        "role": role,
    }


def rule(gain: float) -> str:
    return f"rule: rocauc better by {gain:.4f} over the last 500 labels"


def change(offset: int, request: str, outcome: str, at: float) -> dict[str, Any]:
    return {"offset": offset, "request": request, "outcome": outcome, "time": at}


def promoted(new: str, old: str) -> str:
    return f"promoted {new!r} over {old!r}"


def partition(
    number: int,
    champion: str = "hoeffding_tree",
    audit: list[dict[str, Any]] | None = None,
    seen: int = 1230,
    ht: tuple[float, float] = (0.5, 0.2578),
    lr: tuple[float, float] = (0.8881, 0.9919),
) -> dict[str, Any]:
    """A served partition of /models: hoeffding_tree and logistic_regression, (ROCAUC, rolling
    ROCAUC) each; `metrics` and `model` are the champion's, as streamapp/summary.py makes them."""
    rows = [
        _model("hoeffding_tree", "champion" if champion == "hoeffding_tree" else "challenger", *ht, seen),
        _model(
            "logistic_regression", "champion" if champion != "hoeffding_tree" else "challenger", *lr, seen
        ),
    ]
    return {
        "partition": number,
        "model": champion,
        "model_class": next(r["model_class"] for r in rows if r["role"] == "champion"),
        "task": "binary",
        "offset_applied": seen - 1,
        "events_seen": seen,
        "events_learned": seen,
        "labels_late": 0,
        "labels_unknown": 0,
        "pending_labels": 0,
        "pending_bytes": 0,
        "pending_evicted": 0,
        "pending_expired": 0,
        "deadletters": 0,
        "model_errors": 0,
        "gaps": 0,
        "replays_skipped": 0,
        "duplicates": 0,
        "sources": {},
        "events_replayed": 0,
        "events_lost_to_retention": 0,
        "recovery": {"time": T0 - 2, "from": "new", "committed": None, "replay_until": 0},
        "metrics": next(r["metrics"] for r in rows if r["role"] == "champion"),
        "drift": {**DRIFT, "policy": "none", "model_resets": 0},
        "models": rows,
        "promotion_rule": {"window": 500, "margin": 0.1},
        "changes": audit or [],
        "rollbacks": 0,
        "snapshot": {"seq": 1, "offset": 700, "bytes": 87013, "time": T0 + 21, "age_s": 22.5, "errors": 0},
        "lag": 0,
        "predictions": seen,
        "alerts": 0,
        "latency": {"predict": [339, 728, 136] + [0] * 15, "learn": [0] * 18, "end_to_end": [0] * 18},
        "owner": OWNER,
        "status": "served",
    }


def unavailable(number: int) -> dict[str, Any]:
    return {
        "partition": number,
        "owner": OWNER,
        "status": "unavailable",
        "reason": f"its owner {OWNER!r} is recovering it",
    }


def document(*partitions: dict[str, Any]) -> dict[str, Any]:
    return {
        "worker": OWNER,
        "time": T0 + 30,
        "buckets": [0.0005, 0.001, 0.0025],
        "workers": {OWNER: {"ok": True, "ready": True}},
        "partitions": list(partitions),
    }


FIRST = change(500, rule(0.3238), promoted("logistic_regression", "hoeffding_tree"), T0 + 12.5)


def test_promotions_are_the_promoted_changes_of_served_partitions() -> None:
    audit = [
        change(3, "promote srp", "refused: no model 'srp' on this partition (models: a, b)", T0 + 1),
        change(4, "promote hoeffding_tree", "unchanged: 'hoeffding_tree' is already the champion", T0 + 2),
        FIRST,
        change(900, "rollback 1", "rolled back to snapshot #1 (offset 700)", T0 + 20),
        change(
            950, "promote logistic_regression", promoted("logistic_regression", "hoeffding_tree"), T0 + 21
        ),
    ]
    doc = document(partition(0, "logistic_regression", audit), unavailable(1), partition(2))
    found = demo.promotions(doc)
    assert [(p.partition, p.offset, p.old, p.new) for p in found] == [
        (0, 500, "hoeffding_tree", "logistic_regression"),
        (0, 950, "hoeffding_tree", "logistic_regression"),
    ]
    assert found[0].request == rule(0.3238) and found[0].time == T0 + 12.5
    assert found[0].rolling == {"hoeffding_tree": 0.2578, "logistic_regression": 0.9919}
    assert demo.promotions(None) == [] and demo.promotions(document()) == []


def test_the_promotions_parsed_are_those_streamapp_audits() -> None:
    """The outcome text comes from streamapp/changes.py: a real partition, promoted twice."""
    state = PartitionState(
        0,
        models.resolve("hoeffding_tree"),
        PartitionConfig(pending_max=0),
        challengers=[models.resolve("logistic_regression")],
    )
    changes.promote(state, "logistic_regression", 7)
    changes.promote(state, "logistic_regression", 8)  # unchanged: not a promotion
    changes.promote(state, "hoeffding_tree", 9)
    summary = {**state.summary(time.time()), "owner": OWNER, "status": "served"}
    found = demo.promotions(document(summary))
    assert [(p.offset, p.old, p.new, p.request) for p in found] == [
        (7, "hoeffding_tree", "logistic_regression", "promote logistic_regression"),
        (9, "logistic_regression", "hoeffding_tree", "promote hoeffding_tree"),
    ]


def test_each_promotion_is_new_once_even_after_a_replay_or_a_move() -> None:
    seen: set[tuple[int, int]] = set()
    doc = document(partition(0, "logistic_regression", [FIRST]), partition(1))
    assert [p.key for p in demo.new_promotions(doc, seen)] == [(0, 500)]
    assert demo.new_promotions(doc, seen) == []
    # The partition moved to another worker (or its worker restarted): restored from a snapshot
    # taken before the promotion, the replay applied it again, at another time; then a new one.
    replayed = {**FIRST, "time": T0 + 95}
    later = change(1526, rule(0.1204), promoted("hoeffding_tree", "logistic_regression"), T0 + 96)
    moved = {**partition(0, "hoeffding_tree", [replayed, later]), "owner": "http://127.0.0.1:6067"}
    other = partition(1, "logistic_regression", [{**FIRST, "time": T0 + 97}])
    fresh = demo.new_promotions(document(moved, other), seen)
    assert [(p.partition, p.offset, p.new) for p in fresh] == [
        (0, 1526, "hoeffding_tree"),
        (1, 500, "logistic_regression"),
    ]
    assert seen == {(0, 500), (0, 1526), (1, 500)}
    # Unserved for a moment (a rebalance): nothing new, and nothing forgotten.
    assert demo.new_promotions(document(unavailable(0), unavailable(1)), seen) == []
    assert demo.new_promotions(document(moved, other), seen) == []


def test_a_promotion_is_one_line_with_what_decided_it() -> None:
    doc = document(partition(3, "logistic_regression", [FIRST], ht=(0.5, 0.335), lr=(0.82, 0.765)))
    (found,) = demo.promotions(doc)
    assert demo.format_promotion(found) == (
        "[demo] promotion on partition 3 at offset 500: hoeffding_tree -> logistic_regression "
        "(rule: rocauc better by 0.3238 over the last 500 labels; "
        "when seen: logistic_regression 0.765, hoeffding_tree 0.335)"
    )
    asked = change(77, "promote logistic_regression", promoted("logistic_regression", "hoeffding_tree"), T0)
    (requested,) = demo.promotions(document(partition(5, "logistic_regression", [asked])))
    line = demo.format_promotion(requested)
    assert line == (
        "[demo] promotion on partition 5 at offset 77: hoeffding_tree -> logistic_regression "
        "(by request: promote logistic_regression)"
    )
    assert "\n" not in line


def test_promotions_kept_from_an_earlier_run_are_one_line() -> None:
    again = change(1026, rule(0.1563), promoted("hoeffding_tree", "logistic_regression"), T0 - 50)
    doc = document(
        partition(2, "hoeffding_tree", [FIRST, again]), partition(6, "logistic_regression", [FIRST])
    )
    found = demo.promotions(doc)
    assert demo.format_earlier(found) == (
        "[demo] 3 promotions from before this run (kept state) on partitions 2, 6; "
        "/models lists them under changes"
    )
    assert demo.format_earlier(found[:1]) == (
        "[demo] 1 promotion from before this run (kept state) on partition 2; "
        "/models lists them under changes"
    )


def test_the_summary_shows_the_champions_metric_and_how_many_each_model_champions() -> None:
    # Partition 0 promoted logistic regression: its champion metric is logistic regression's
    # (0.9), which `metrics` holds too; the others' champion is the tree.
    parts = [
        partition(0, "logistic_regression", [FIRST], ht=(0.5, 0.3), lr=(0.9, 0.95)),
        partition(1, "logistic_regression", [FIRST], ht=(0.5, 0.3), lr=(0.8, 0.85)),
        partition(2, ht=(0.7, 0.6), lr=(0.85, 0.6)),
        {**partition(3, ht=(0.0, 0.0), lr=(0.0, 0.0), seen=0), "deadletters": 2},  # learned nothing yet
    ]
    assert parts[0]["metrics"]["rocauc"] == 0.9
    served = demo.served(document(*parts, unavailable(4)))
    assert len(served) == 4
    assert demo.summary_line(served, 199.6) == (
        "[demo] 4 partitions served, 3690 events scored (200/s), champion ROCAUC 0.800 "
        "(mean over partitions), champions: hoeffding_tree 2, logistic_regression 2, dead letters 2"
    )
    assert demo.summary_line(served[:3], 0) == (
        "[demo] 3 partitions served, 3690 events scored (0/s), champion ROCAUC 0.800 "
        "(mean over partitions), champions: logistic_regression 2, hoeffding_tree 1, dead letters 0"
    )
    assert demo.summary_line([], 0) == (
        "[demo] 0 partitions served, 0 events scored (0/s), champion metric - (mean over partitions), "
        "champions: -, dead letters 0"
    )


def test_the_summary_names_the_main_metric_of_other_tasks() -> None:
    regression = {
        **partition(0),
        "model": "linear_regression",
        "task": "regression",
        "metrics": {"mae": 1.5, "rmse": 2.0, "r2": 0.3},
        "models": None,
    }
    line = demo.summary_line([regression, {**regression, "partition": 1, "metrics": {"mae": 2.5}}], 10)
    assert "champion MAE 2.000 (mean over partitions), champions: linear_regression 2" in line


def test_the_demo_turns_the_rule_on_but_the_users_settings_win() -> None:
    rule_on = {"STREAMAPP_PROMOTE_AFTER": "500", "STREAMAPP_PROMOTE_MARGIN": "0.1"}
    assert demo.demo_settings({}) == {"STREAMAPP_CHALLENGERS": "logistic_regression", **rule_on}
    assert demo.demo_settings({"PATH": "/bin"}) == {"STREAMAPP_CHALLENGERS": "logistic_regression", **rule_on}
    assert demo.demo_settings({"STREAMAPP_PROMOTE_AFTER": "0"}) == {
        "STREAMAPP_CHALLENGERS": "logistic_regression",
        "STREAMAPP_PROMOTE_MARGIN": "0.1",
    }
    assert demo.demo_settings({"STREAMAPP_PROMOTE_MARGIN": "0"}) == {
        "STREAMAPP_CHALLENGERS": "logistic_regression",
        "STREAMAPP_PROMOTE_AFTER": "500",
    }
    assert demo.demo_settings({"STREAMAPP_CHALLENGERS": "naive_bayes,srp"}) == rule_on
    # No challenger, no rule: STREAMAPP_CHALLENGERS= turns both off, as does a model of one's own.
    assert demo.demo_settings({"STREAMAPP_CHALLENGERS": ""}) == {}
    assert demo.demo_settings({"STREAMAPP_CHALLENGERS": " , "}) == {}
    assert demo.demo_settings({"STREAMAPP_MODEL": "adaptive_random_forest"}) == {}
    assert (
        demo.demo_settings({"STREAMAPP_MODEL": "naive_bayes", "STREAMAPP_CHALLENGERS": "hoeffding_tree"})
        == rule_on
    )


def test_format_avro_adds_the_mapping_and_its_own_topics_but_never_over_the_users() -> None:
    registry = "http://127.0.0.1:8081/apis/ccompat/v7"
    added = demo.avro_settings({}, registry)
    assert added["STREAMAPP_INPUT_FORMAT"] == added["STREAMAPP_OUTPUT_FORMAT"] == "avro"
    assert added["STREAMAPP_SCHEMA_REGISTRY_URL"] == registry
    assert added["STREAMAPP_EVENTS_TOPIC"] == "events-avro", "a JSON demo's topic holds JSON"
    mine = demo.avro_settings(
        {"STREAMAPP_OUTPUT_FORMAT": "json", "STREAMAPP_EVENTS_TOPIC": "cards"}, registry
    )
    assert "STREAMAPP_OUTPUT_FORMAT" not in mine and "STREAMAPP_EVENTS_TOPIC" not in mine
