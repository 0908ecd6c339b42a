"""`GET /metrics`' own series (streamapp/prometheus.py's ModelCollector), without Kafka: real
partition states fed a known stream, rendered as Prometheus text and parsed back. Each series
must carry the number the feed itself implies (events, labels, dead letters, River's metrics,
the champion, lag, snapshot age, latency buckets), not merely whatever the state holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamapp import changes, datasets, models, records
from streamapp.histogram import BUCKETS
from streamapp.partition import PartitionConfig, PartitionState
from streamapp.processor import Timing
from streamapp.prometheus import COUNTERS, GAUGES, ModelCollector
from tests.exposition import FakeProcessor, series_names, worker_exposition
from tests.oracle import river_scores

TOL = 1e-9
SNAPSHOT_AGE = 90.0  # seconds since partition 0's snapshot
LAG = {0: 17, 3: None}  # partition 3's lag is unknown: no series
PENDING_MAX = 5  # partition 3's bound on waiting events


@dataclass
class Fed:
    """A state and what its feed implies, counted here, not read back from the state."""

    state: PartitionState
    labelled: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    unlabelled: list[int] = field(default_factory=list)  # the sizes of the events sent unlabelled
    refused: int = 0
    last_offset: int = -1


def feed(state: PartitionState, samples: list[datasets.Sample], every_unlabelled: int, every_bad: int) -> Fed:
    """Apply the samples in offset order: each `every_unlabelled`-th comes without its label (it
    waits), each `every_bad`-th is refused (a feature changes kind): a dead letter. Each event's
    size is that of its JSON value."""
    fed = Fed(state)
    offset = -1
    for i, sample in enumerate(samples):
        offset += 1
        if i % every_bad == every_bad - 1:
            bad = records.Event(f"bad-{i}", {**sample.x, "long_url": "lots"}, sample.y, None)
            state.apply(offset, bad, float(offset))
            fed.refused += 1
            continue
        y = None if i % every_unlabelled == every_unlabelled - 1 else sample.y
        size = len(orjson.dumps({"id": sample.id, "x": sample.x, "y": y}))
        state.apply(offset, records.Event(sample.id, sample.x, y, None, size), float(offset))
        if y is None:
            fed.unlabelled.append(size)
        else:
            fed.labelled.append((sample.x, sample.y))
    fed.last_offset = offset
    return fed


def scrape(
    processor: FakeProcessor, lag: Callable[[int], int | None], served: tuple[int, ...] = ()
) -> dict[str, Any]:
    """{family name: family}, from the text Prometheus would read."""
    registry = CollectorRegistry()
    registry.register(ModelCollector(processor, lag, lambda: served))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of the family's samples named `name + suffix`."""
    return {
        tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix
    }


def by_partition(family: Any, suffix: str = "") -> dict[int, float]:
    return {int(dict(labels)["partition"]): v for labels, v in values(family, suffix).items()}


@pytest.fixture(scope="module")
def world() -> tuple[FakeProcessor, dict[int, Fed], dict[int, dict[str, list[float]]], float]:
    """Partition 0: a champion and a challenger, promoted once; partition 3: one model, and
    room for only PENDING_MAX events waiting for their label."""
    binary = models.resolve("hoeffding_tree", "binary")
    challenger = models.resolve("naive_bayes", "binary")
    samples = list(datasets.load("phishing", limit=600))
    processor = FakeProcessor()
    fed = {
        0: feed(PartitionState(0, binary, PartitionConfig(10_000), [challenger]), samples[:360], 9, 25),
        3: feed(PartitionState(3, binary, PartitionConfig(PENDING_MAX)), samples[360:], 7, 40),
    }
    processor.states = {p: f.state for p, f in fed.items()}
    # Partition 0 promoted its challenger: the champion label moves with it.
    state0 = fed[0].state
    assert "promoted 'naive_bayes'" in changes.promote(state0, "naive_bayes", fed[0].last_offset)
    # Partition 0 took a snapshot SNAPSHOT_AGE seconds ago; partition 3 never did.
    runtime = state0.runtime
    runtime.snapshot_seq, runtime.snapshot_offset, runtime.snapshot_bytes = 4, 300, 123_456
    scraped_at = time.time()
    runtime.snapshot_at = scraped_at - SNAPSHOT_AGE
    # Latencies observed per partition (seconds), one histogram each.
    observed = {
        0: {"predict": [0.00003, 0.0002, 0.0002, 0.004], "learn": [0.0007, 0.3], "end_to_end": [0.02, 12.0]},
        3: {"predict": [0.00005], "learn": [], "end_to_end": [1.0, 1.0, 2.5]},
    }
    for partition, kinds in observed.items():
        timing = processor.timings[partition] = Timing()
        for kind, seconds in kinds.items():
            for s in seconds:
                getattr(timing, kind).observe(s)
        timing.predictions = len(kinds["predict"])
    processor.timings[0].alerts = 2
    processor.store.refused = {3: 2}
    return processor, fed, observed, scraped_at


def test_counters_are_the_events_each_partition_was_fed(world: Any) -> None:
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    seen = by_partition(families["streamapp_events"], "_total")
    assert seen == {p: len(f.labelled) + len(f.unlabelled) for p, f in fed.items()}
    learned = by_partition(families["streamapp_events_learned"], "_total")
    assert learned == {p: len(f.labelled) for p, f in fed.items()}
    deadletters = by_partition(families["streamapp_deadletters"], "_total")
    assert deadletters == {0: 14, 3: 6} == {p: f.refused for p, f in fed.items()}
    assert all(f.refused and f.unlabelled for f in fed.values()), "every kind of event was fed"
    for name in ("streamapp_labels_late", "streamapp_labels_unknown", "streamapp_gaps"):
        assert by_partition(families[name], "_total") == {0: 0, 3: 0}, name
    assert by_partition(families["streamapp_rollbacks"], "_total") == {0: 0, 3: 0}
    evicted = by_partition(families["streamapp_pending_evicted"], "_total")
    assert evicted == {0: 0, 3: len(fed[3].unlabelled) - PENDING_MAX} and evicted[3] > 0


def test_every_counter_and_gauge_reads_its_state(world: Any) -> None:
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    for name, _, value in COUNTERS:
        assert families[name].type == "counter", name
        assert by_partition(families[name], "_total") == {p: value(f.state) for p, f in fed.items()}, name
    for name, _, value in GAUGES:
        assert families[name].type == "gauge", name
        assert by_partition(families[name]) == {p: value(f.state) for p, f in fed.items()}, name


def test_gauges_are_the_offsets_waiting_events_and_snapshot(world: Any) -> None:
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    assert by_partition(families["streamapp_offset_applied"]) == {p: f.last_offset for p, f in fed.items()}
    # Partition 3 keeps only the newest PENDING_MAX of its unlabelled events.
    kept = {0: fed[0].unlabelled, 3: fed[3].unlabelled[-PENDING_MAX:]}
    assert by_partition(families["streamapp_pending_labels"]) == {p: len(k) for p, k in kept.items()}
    assert by_partition(families["streamapp_pending_labels_bytes"]) == {p: sum(k) for p, k in kept.items()}
    assert by_partition(families["streamapp_snapshot_sequence"]) == {0: 4, 3: 0}
    assert by_partition(families["streamapp_snapshot_offset"]) == {0: 300, 3: -1}
    assert by_partition(families["streamapp_snapshot_size_bytes"]) == {0: 123_456, 3: 0}


def test_snapshot_age_and_lag_only_where_known(world: Any) -> None:
    processor, _, _, scraped_at = world
    before = time.time()
    families = scrape(processor, LAG.get)
    after = time.time()
    (age,) = by_partition(families["streamapp_snapshot_age_seconds"]).items()
    assert age[0] == 0, "partition 3 has no snapshot: no age"
    assert SNAPSHOT_AGE + (before - scraped_at) - TOL <= age[1] <= SNAPSHOT_AGE + (after - scraped_at) + TOL
    assert by_partition(families["streamapp_consumer_lag_events"]) == {0: 17}
    assert by_partition(families["streamapp_snapshots_refused"], "_total") == {3: 2}


def test_model_metrics_are_rivers_with_each_models_role(world: Any) -> None:
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    series = {
        (int(labels["partition"]), labels["model"], labels["role"], labels["metric"]): v
        for labels, v in ((dict(k), v) for k, v in values(families["streamapp_model_metric"]).items())
    }
    expected = {}
    for partition, f in fed.items():
        roles = (
            {"hoeffding_tree": "challenger", "naive_bayes": "champion"}
            if partition == 0
            else {"hoeffding_tree": "champion"}
        )
        for name, role in roles.items():
            names = list(f.state.contenders[0].metrics.values())
            scores = river_scores(f.labelled, models.resolve(name, "binary").build, names)
            expected.update({(partition, name, role, metric): score for metric, score in scores.items()})
    assert set(series) == set(expected)
    assert series == pytest.approx(expected, abs=TOL)
    assert {"rocauc", "accuracy"} <= {metric for *_, metric in series}


def test_a_challengers_lead_is_positive_when_it_is_better_whichever_way_the_metric_goes(world: Any) -> None:
    """Partition 0's challenger (the Hoeffding tree, demoted) against its champion: ahead by
    its metric minus the champion's for accuracy, F1 and ROCAUC, by the champion's minus its
    own for log loss."""
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    lead = {
        (dict(k)["partition"], dict(k)["model"], dict(k)["metric"]): v
        for k, v in values(families["streamapp_challenger_lead"]).items()
    }
    assert {p for p, _, _ in lead} == {"0"}, "partition 3 has no challenger: no series"
    scores = {c.name: c.metrics.values() for c in fed[0].state.contenders}
    challenger, champion = scores["hoeffding_tree"], scores["naive_bayes"]
    sign = {"accuracy": 1, "rocauc": 1, "f1": 1, "logloss": -1}
    assert set(sign) == {metric for _, _, metric in lead}
    for metric, direction in sign.items():
        expected = direction * (challenger[metric] - champion[metric])
        assert lead["0", "hoeffding_tree", metric] == pytest.approx(expected, abs=TOL), metric
    assert challenger["logloss"] != champion["logloss"], "the sign of log loss's lead is tested"


def test_the_settings_alert_rules_compare_against_are_exported(world: Any) -> None:
    processor, fed, _, _ = world
    families = scrape(processor, LAG.get)
    (partitions,) = families["streamapp_events_topic_partitions"].samples
    (interval,) = families["streamapp_snapshot_interval_seconds"].samples
    assert (partitions.value, interval.value) == (12, 45.0)
    # What a crash replays: the records after the written snapshot (partition 0's at offset 300),
    # every record of partition 3 (none written).
    since = by_partition(families["streamapp_events_since_snapshot"])
    assert since == {0: fed[0].last_offset - 300, 3: fed[3].last_offset + 1}
    assert since[3] == len(fed[3].labelled) + len(fed[3].unlabelled) + fed[3].refused


def test_the_partitions_a_worker_holds_are_served_even_before_their_first_event(world: Any) -> None:
    processor, _, _, _ = world
    served = by_partition(scrape(processor, LAG.get, served=(3, 5, 0))["streamapp_partition_served"])
    assert served == {0: 1, 3: 1, 5: 1}, "partition 5 has no state yet and is served all the same"
    assert scrape(processor, LAG.get)["streamapp_partition_served"].samples == []


def test_predictions_alerts_and_latency_histograms(world: Any) -> None:
    processor, _, observed, _ = world
    families = scrape(processor, LAG.get)
    assert by_partition(families["streamapp_predictions"], "_total") == {0: 4, 3: 1}
    assert by_partition(families["streamapp_alerts"], "_total") == {0: 2, 3: 0}
    for kind in ("predict", "learn", "end_to_end"):
        family = families[f"streamapp_{kind}_latency_seconds"]
        assert family.type == "histogram"
        for partition, kinds in observed.items():
            seconds = kinds[kind]
            buckets = {
                float(dict(labels)["le"]): v
                for labels, v in values(family, "_bucket").items()
                if dict(labels)["partition"] == str(partition)
            }
            bounds = [*BUCKETS, float("inf")]
            assert buckets == {b: sum(1 for s in seconds if s <= b) for b in bounds}, (kind, partition)
            assert by_partition(family, "_count")[partition] == len(seconds)
            assert by_partition(family, "_sum")[partition] == pytest.approx(sum(seconds), abs=TOL)


def test_a_worker_without_partitions_exposes_the_families_without_series() -> None:
    families = scrape(FakeProcessor(), lambda partition: 0)
    names = [name for name, _, _ in (*COUNTERS, *GAUGES)] + [
        "streamapp_snapshot_age_seconds",
        "streamapp_consumer_lag_events",
        "streamapp_model_metric",
        "streamapp_snapshots_refused",
        "streamapp_predictions",
        "streamapp_alerts",
    ]
    for name in names:
        assert name in families and families[name].documentation, name
        assert families[name].samples == [], name
    (children,) = families["streamapp_snapshot_children"].samples
    assert children.name == "streamapp_snapshot_children_total" and children.value == 0


def test_the_exposition_names_every_series_of_a_worker_without_partitions() -> None:
    """What tests/exposition.py gives the alert and dashboard tests: streamapp's families with
    their counters' `_total` and histograms' `_bucket`, Faust's and the process's."""
    names = series_names(worker_exposition())
    expected = {f"{name}_total" for name, _, _ in COUNTERS} | {name for name, _, _ in GAUGES}
    expected |= {"streamapp_end_to_end_latency_seconds_bucket", "streamapp_challenger_lead"}
    expected |= {"faust_total_rebalances", "process_resident_memory_bytes", "process_cpu_seconds_total"}
    assert expected <= names, expected - names
    assert "streamapp_events" not in names, "a counter is selected by its _total"
