"""A partition state applied to a stream equals River's progressive validation on that stream."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import orjson
import pytest
from river import datasets as river_datasets
from river import drift
from river import metrics as river_metrics
from river import stream as river_stream

from streamapp import changes, datasets, models, producer, records, recovery
from streamapp.partition import Controlled, DeadLetter, Labelled, PartitionConfig, PartitionState, Scored
from streamapp.records import Control, Event
from tests.oracle import river_on_log, river_predictions, river_scores

TOL = 1e-9


def feed(state: PartitionState, msgs: Any, start: int = 0) -> list[dict[str, Any]]:
    """Apply (key, value) messages as the processor does; returns the prediction of each event."""
    out = []
    for offset, (_, value) in enumerate(msgs, start=start):
        decoded = records.parse(value, records.Limits(max_event_bytes=1 << 20))
        outcome = state.apply(offset, decoded)
        assert isinstance(outcome, Scored | Labelled), outcome
        if isinstance(outcome, Scored):
            out.append(outcome.prediction)
    return out


def pairs(name: str, limit: int) -> list[tuple[dict[str, Any], Any]]:
    return [(s.x, s.y) for s in datasets.load(name, limit=limit)]


@pytest.mark.parametrize("preset", ["hoeffding_tree", "logistic_regression", "naive_bayes"])
def test_binary_metrics_and_predictions_equal_river(preset: str) -> None:
    spec = models.resolve(preset)
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    predictions = feed(state, producer.messages(datasets.load("phishing")))
    stream = pairs("phishing", 1250)
    expected = river_scores(stream, spec.build, ["rocauc", "accuracy", "f1", "logloss"])
    assert state.metrics.values() == pytest.approx(expected, abs=TOL)
    assert state.events_learned == state.events_seen == 1250
    assert [p["proba"] for p in predictions] == river_predictions(stream, spec.build, "rocauc")
    assert [p["class"] for p in predictions] == river_predictions(stream, spec.build, "accuracy")


def test_delayed_labels_equal_river_with_delay() -> None:
    spec = models.resolve("hoeffding_tree")
    state = PartitionState(0, spec, PartitionConfig(pending_max=1000))
    feed(state, producer.messages(datasets.load("phishing"), label_delay=25))
    expected = river_scores(pairs("phishing", 1250), spec.build, ["rocauc", "accuracy"], delay=25)
    assert state.metrics.values()["rocauc"] == pytest.approx(expected["rocauc"], abs=TOL)
    assert state.metrics.values()["accuracy"] == pytest.approx(expected["accuracy"], abs=TOL)
    assert state.labels_late == state.events_learned == 1250
    assert not state.waiting.events


def test_regression_metrics_equal_river() -> None:
    spec = models.resolve("linear_regression")
    stream = list(itertools.islice(river_datasets.TrumpApproval(), 500))
    samples = [datasets.Sample("k", f"t{i}", x, y) for i, (x, y) in enumerate(stream)]
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    feed(state, producer.messages(samples))
    assert state.metrics.values() == pytest.approx(
        river_scores(stream, spec.build, ["mae", "rmse", "r2"]), abs=TOL
    )


def test_anomaly_scores_and_rocauc_equal_river() -> None:
    spec = models.resolve("half_space_trees")
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    predictions = feed(state, producer.messages(datasets.load("card", limit=3000)))
    stream = pairs("card", 3000)
    assert state.metrics.values()["rocauc"] == pytest.approx(
        river_scores(stream, spec.build, ["rocauc"])["rocauc"], abs=TOL
    )
    assert [p["score"] for p in predictions] == river_predictions(stream, spec.build, "rocauc")
    assert state.events_learned == 3000


def test_offset_guard_skips_replays_and_refuses_gaps() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    msgs = list(producer.messages(datasets.load("phishing", limit=10)))
    feed(state, msgs[:5])
    assert state.admit(3) == "replay"
    assert state.replays_skipped == 1
    assert state.admit(7) == "gap"  # offsets 5 and 6 were never seen
    assert state.gaps == 1
    assert state.offset == 4, "a refused gap leaves the model where it was"
    assert state.admit(5) == "apply"


def test_a_new_state_takes_any_first_offset_unless_recovery_positioned_it() -> None:
    spec = models.resolve("hoeffding_tree")
    assert PartitionState(0, spec, PartitionConfig(pending_max=0)).admit(42) == "apply"
    positioned = PartitionState(0, spec, PartitionConfig(pending_max=0))
    recovery.recovered(positioned, now=0.0, source="new", committed=None, resume=0)
    assert positioned.admit(42) == "gap"
    assert positioned.admit(0) == "apply"


def test_waiting_events_are_bounded_and_unknown_labels_counted() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=3))
    samples = list(datasets.load("phishing", limit=5))
    msgs = list(producer.messages(samples, label_delay=1000))  # 5 events, then their 5 labels
    feed(state, msgs[:5])
    assert list(state.waiting.events) == [s.id for s in samples[2:]]
    assert state.waiting.evicted == 2
    feed(state, msgs[5:], start=5)
    assert not state.waiting.events
    assert state.labels_unknown == 2  # the labels of the two evicted events
    assert state.labels_late == 3


def test_waiting_events_expire_by_record_time_and_their_late_labels_are_counted() -> None:
    """The age limit is in record time (the Kafka timestamps of the log), so replay expires the
    same events as the first pass did."""
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=100))
    state.config = replace(state.config, pending_max_age=60.0)
    x = {"amount": 1.0}
    for offset, (event_id, at) in enumerate([("a", 0.0), ("b", 30.0), ("c", 85.0)]):
        state.apply_event(Event(event_id, x, None, None), offset, at)
    assert list(state.waiting.events) == ["b", "c"] and state.waiting.expired == 1  # a waited 85 s, b 55 s
    assert not state.apply_label(records.LateLabel("b", True), 3, 100.0)  # b waited 70 s: gone
    assert state.apply_label(records.LateLabel("c", True), 4, 140.0)  # c waited 55 s
    assert (state.waiting.expired, state.labels_unknown, state.labels_late) == (2, 1, 1)
    assert state.summary(0.0)["pending_expired"] == 2


def test_drift_detections_equal_adwin_on_rivers_own_error_stream() -> None:
    """SEA with an abrupt concept change at 50,000: the partition's ADWIN fires where River's
    ADWIN, fed the errors of River's own progressive loop, fires."""
    samples = list(datasets.load("sea", limit=60_000))
    spec = models.resolve("hoeffding_tree")
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    for offset, s in enumerate(samples):
        state.apply_event(Event(s.id, s.x, s.y, None), offset)

    model, adwin, expected = spec.build(), drift.ADWIN(), []
    for offset, s in enumerate(samples):
        before = adwin.estimation
        adwin.update(float(model.predict_one(s.x) != s.y))
        if adwin.drift_detected:
            expected.append((offset, "rise" if adwin.estimation > before else "fall"))
        model.learn_one(s.x, s.y)

    # The tree's learning curve is detected too (the error fell); the concept change is a rise.
    assert [d for o, d in expected if o < 50_000] == ["fall", "fall"]
    assert expected[2][1] == "rise" and expected[2][0] >= 50_000
    assert state.champion.drift.detections == len(expected)
    assert state.champion.drift.rises == sum(d == "rise" for _, d in expected)
    assert [(offset, direction) for offset, _, direction in state.champion.drift.recent] == expected[-10:]
    assert state.summary(0.0)["drift"]["detections"] == len(expected)


def test_the_reset_policy_equals_rivers_loop_that_replaces_the_model_when_the_error_rises() -> None:
    samples = list(datasets.load("sea", limit=60_000))
    spec = models.resolve("hoeffding_tree")
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    state.config = replace(state.config, drift_policy="reset")
    for offset, s in enumerate(samples):
        state.apply_event(Event(s.id, s.x, s.y, None), offset)

    model, adwin, accuracy, resets = spec.build(), drift.ADWIN(), river_metrics.Accuracy(), 0
    for s in samples:
        y_pred = model.predict_one(s.x)
        if y_pred is not None:  # as progressive_val_score: a fresh model's first guess is skipped
            accuracy.update(s.y, y_pred)
        before = adwin.estimation
        adwin.update(float(y_pred != s.y))
        if adwin.drift_detected and adwin.estimation > before:  # only when the error rose
            model, resets = model.clone(), resets + 1
        model.learn_one(s.x, s.y)

    assert state.champion.resets == resets >= 1
    assert state.metrics.values()["accuracy"] == pytest.approx(accuracy.get(), abs=1e-12)
    probes = [s.x for s in samples[-50:]]
    assert [state.model.predict_proba_one(x) for x in probes] == [model.predict_proba_one(x) for x in probes]


def delayed_predictions(stream: list[tuple[dict[str, Any], Any]], build: Any, delay: int) -> list[Any]:
    """River's own question-and-answer loop with labels `delay` events late."""
    model, out = build(), []
    for _, x, y in river_stream.simulate_qa(stream, moment=None, delay=delay):
        if y is None:
            out.append(model.predict_proba_one(x))
        else:
            model.learn_one(x, y)
    return out


def test_each_challenger_equals_river_for_that_model_alone() -> None:
    """Three models on one partition, labels 25 events late: each model's metrics and
    predictions are River's progressive validation of that model alone; the champion's are
    emitted, the others ride along as shadow predictions."""
    champion, *challengers = (
        models.resolve(n) for n in ("hoeffding_tree", "logistic_regression", "naive_bayes")
    )
    state = PartitionState(0, champion, PartitionConfig(pending_max=1000), challengers=challengers)
    shadows: list[dict[str, Any]] = []
    for offset, (_, value) in enumerate(producer.messages(datasets.load("phishing"), label_delay=25)):
        decoded = records.parse(value, records.Limits(max_event_bytes=1 << 20))
        if isinstance(decoded, Event):
            applied = state.apply_event(decoded, offset)
            assert applied.challengers is not None
            shadows.append({"hoeffding_tree": applied.prediction, **applied.challengers})
        else:
            state.apply_label(decoded, offset)
    stream = pairs("phishing", 1250)
    summary = {m["name"]: m for m in state.summary(0.0)["models"]}
    assert [m["role"] for m in state.summary(0.0)["models"]] == ["champion", "challenger", "challenger"]
    for spec in (champion, *challengers):
        expected = river_scores(stream, spec.build, ["rocauc", "accuracy", "f1", "logloss"], delay=25)
        assert summary[spec.name]["metrics"] == pytest.approx(expected, abs=TOL), spec.name
        assert summary[spec.name]["learned"] == 1250
        assert [p[spec.name]["proba"] for p in shadows] == delayed_predictions(stream, spec.build, 25)
    assert state.metrics.values() == summary["hoeffding_tree"]["metrics"]


def test_the_promotion_rule_promotes_when_a_challenger_leads_by_the_margin_over_the_window() -> None:
    """The rule's decision, recomputed with River's RollingROCAUC on each model's own
    predictions: the first label at which the challenger leads the champion by more than the
    margin over full windows is where the promotion happens, and predictions switch after it."""
    window, margin = 200, 0.02
    weak, strong = models.resolve("naive_bayes"), models.resolve("logistic_regression")
    state = PartitionState(
        0, weak, PartitionConfig(promote_after=window, promote_margin=margin), challengers=[strong]
    )
    stream = pairs("phishing", 1250)
    emitted = [state.apply_event(Event(str(i), x, y, None), i).prediction for i, (x, y) in enumerate(stream)]

    rolling = {n: river_metrics.RollingROCAUC(window_size=window) for n in ("weak", "strong")}
    predicted = {
        "weak": river_predictions(stream, weak.build, "rocauc"),
        "strong": river_predictions(stream, strong.build, "rocauc"),
    }
    seen = {"weak": 0, "strong": 0}
    promoted_at = None
    for i, (_, y) in enumerate(stream):
        for name in rolling:
            if predicted[name][i]:
                rolling[name].update(y, predicted[name][i])
                seen[name] += 1
        if (
            i + 1 >= window
            and min(seen.values()) >= window
            and rolling["strong"].get() - rolling["weak"].get() > margin
        ):
            promoted_at = i
            break
    assert promoted_at is not None, "on phishing, logistic regression overtakes naive Bayes"
    assert state.champion.name == "logistic_regression"
    (change,) = state.changes
    assert change["offset"] == promoted_at
    assert change["outcome"] == "promoted 'logistic_regression' over 'naive_bayes'"
    assert [p["proba"] for p in emitted] == predicted["weak"][: promoted_at + 1] + predicted["strong"][
        promoted_at + 1 :
    ]


def test_a_requested_promotion_and_rollback_are_audited_and_unknown_models_refused() -> None:
    champion, challenger = models.resolve("hoeffding_tree"), models.resolve("naive_bayes")
    state = PartitionState(0, champion, PartitionConfig(pending_max=0), challengers=[challenger])
    other = PartitionState(0, champion, PartitionConfig(pending_max=0))

    def control(offset: int, action: str, model: str | None = None, seq: int | None = None) -> str:
        outcome = state.apply(offset, Control(f"c{offset}", action, model, seq), 0.0, lambda p, s: other)
        assert isinstance(outcome, Controlled)
        return outcome.outcome

    assert control(0, "promote", "srp").startswith("refused: no model 'srp'")
    assert control(1, "promote", "hoeffding_tree") == "unchanged: 'hoeffding_tree' is already the champion"
    assert control(2, "promote", "naive_bayes") == "promoted 'naive_bayes' over 'hoeffding_tree'"
    assert state.champion.name == "naive_bayes" and state.version()["name"] == "naive_bayes"
    assert control(3, "rollback", seq=4).startswith("refused: snapshot #4 holds models ['hoeffding_tree']")
    assert [c["offset"] for c in state.changes] == [0, 1, 2, 3]
    assert state.offset == 3 and state.rollbacks == 0
    copy = state.apply(4, Control("c2", "promote", "hoeffding_tree"))
    assert copy == DeadLetter("control event 'c2' was applied already (a copy is refused)")
    assert state.champion.name == "naive_bayes" and state.deadletters == 1


def test_the_log_oracle_is_rivers_progressive_validation() -> None:
    """tests/oracle.py's river_on_log (used by the recovery tests on real partition logs) gives
    what progressive_val_score gives, with labels inline and 25 events late."""
    spec = models.resolve("hoeffding_tree")
    stream = pairs("phishing", 1250)
    for delay in (0, 25):
        docs = [orjson.loads(v) for _, v in producer.messages(datasets.load("phishing"), label_delay=delay)]
        scores, predictions, _ = river_on_log(docs, spec.build, ["rocauc", "accuracy"])
        assert scores == river_scores(stream, spec.build, ["rocauc", "accuracy"], delay=delay or None)
        if not delay:
            assert list(predictions.values()) == river_predictions(stream, spec.build, "rocauc")


# -- a message that does not fit the partition changes nothing --------------------------------


def _binary_state(**bounds: Any) -> PartitionState:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=100))
    for name, value in bounds.items():
        setattr(state, name, value)
    state.apply_event(Event("a", {"amount": 1.0, "merchant": "fuel"}, True, None), 0)
    state.apply_event(Event("b", {"amount": 2.0, "merchant": "fuel"}, None, None), 1)
    return state


def _fingerprint(state: PartitionState) -> tuple[Any, ...]:
    return (
        state.metrics.values(),
        state.model.predict_proba_one({"amount": 1.5, "merchant": "fuel"}),
        dict(state.waiting.events),
        state.events_learned,
        state.offset,
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Event("c", {"amount": 1.0}, "yes", None), "a binary partition learns bool or int"),
        (Event("c", {"amount": 1.0}, 2, None), "must be true/false or 1/0"),
        (Event("c", {"amount": 1.0}, 1, None), "this partition has learned bool labels"),
        (Event("c", {"amount": "high"}, True, None), "'amount' is a number in this partition, got a string"),
        (Event("c", {"merchant": 7}, None, None), "'merchant' is a string in this partition, got a number"),
        (records.LateLabel("b", "abc"), "a binary partition learns bool or int"),
        (records.LateLabel("b", 0.5), "is a float"),
    ],
)
def test_a_message_that_does_not_fit_is_refused_before_anything_changes(message: Any, reason: str) -> None:
    state = _binary_state()
    before = _fingerprint(state)
    with pytest.raises(records.BadEvent, match=reason):
        if isinstance(message, Event):
            state.apply_event(message, 2)
        else:
            state.apply_label(message, 2)
    assert _fingerprint(state) == before
    assert "b" in state.waiting.events, "the event keeps waiting for a label that fits"
    assert state.apply_label(records.LateLabel("b", False), 2), "and learns it"


def test_regression_refuses_labels_that_are_not_numbers() -> None:
    state = PartitionState(0, models.resolve("linear_regression"), PartitionConfig(pending_max=10))
    state.apply_event(Event("a", {"f": 1.0}, None, None), 0)
    for bad in ("abc", True):
        with pytest.raises(records.BadEvent, match="a regression partition learns int or float"):
            state.apply_label(records.LateLabel("a", bad), 1)
    assert state.apply_label(records.LateLabel("a", 3), 1)  # ints and floats mix in regression
    state.apply_event(Event("b", {"f": 2.0}, 2.5, None), 2)
    assert state.events_learned == 2


def test_multiclass_learns_at_most_max_classes() -> None:
    spec = models.resolve("hoeffding_tree", "multiclass")
    state = PartitionState(0, spec, PartitionConfig(pending_max=0))
    state.config = replace(state.config, max_classes=3)
    for offset, label in enumerate(["a", "b", "c", "a"]):
        state.apply_event(Event(str(offset), {"f": 1.0}, label, None), offset)
    with pytest.raises(records.BadEvent, match=r"would be class 4, over 3 \(STREAMAPP_MAX_CLASSES\)"):
        state.apply_event(Event("x", {"f": 1.0}, "d", None), 4)
    with pytest.raises(records.BadEvent, match="has learned str labels"):
        state.apply_event(Event("x", {"f": 1.0}, 1, None), 4)
    assert state.schema.classes == {"a", "b", "c"}


def test_waiting_events_are_bounded_in_bytes_the_oldest_going_first() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=1000))
    state.config = replace(state.config, pending_max_bytes=1000)
    for offset in range(10):
        state.apply_event(Event(f"e{offset}", {"f": 1.0}, None, None, size=300), offset)
    assert list(state.waiting.events) == ["e7", "e8", "e9"] and state.waiting.bytes == 900
    assert state.waiting.evicted == 7
    state.apply_label(records.LateLabel("e8", True), 10)
    assert state.waiting.bytes == 600
    state.apply_event(Event("e9", {"f": 2.0}, None, None, size=50), 11)  # the same id again
    assert list(state.waiting.events) == ["e7", "e9"] and state.waiting.bytes == 350


def test_rollbacks_are_rate_limited_in_record_time() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    state.config = replace(state.config, rollback_min_interval=60.0)
    assert state.rollback_wait(1000.0) == 0.0
    changes.roll_back(
        state,
        PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0)),
        1,
        0,
        at=1000.0,
    )
    assert state.rollback_wait(1030.0) == 30.0
    assert state.rollback_wait(1060.0) == 0.0


def test_an_event_whose_id_a_newer_event_reuses_is_counted_not_lost() -> None:
    """Every event ends applied, dead-lettered or counted: two unlabelled events with one id
    and one label: the newer is learned, the older counted as evicted."""
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=10))
    state.apply_event(Event("a", {"f": 1.0}, None, None), 0)
    state.apply_event(Event("a", {"f": 2.0}, None, None), 1)
    assert state.apply_label(records.LateLabel("a", True), 2)
    assert (state.waiting.evicted, state.labels_late, state.events_learned) == (1, 1, 1)


@pytest.mark.parametrize("preset", ["hoeffding_tree", "half_space_trees"])
def test_a_label_goes_to_the_newest_event_of_its_id_even_one_that_came_labelled(preset: str) -> None:
    """An event waits under id "a"; a newer event "a" comes with its label; a late label for "a"
    then has no event waiting (the newest already has its answer): counted as unknown, and the
    older event counted as evicted, not learned with a label meant for another."""
    state = PartitionState(0, models.resolve(preset), PartitionConfig(pending_max=10))
    state.apply_event(Event("a", {"f": 1.0}, None, None), 0)
    state.apply_event(Event("a", {"f": 2.0}, True, None), 1)
    assert len(state.waiting) == 0
    assert not state.apply_label(records.LateLabel("a", True), 2)
    assert (state.waiting.evicted, state.labels_unknown, state.labels_late) == (1, 1, 0)
