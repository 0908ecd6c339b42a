"""`GET /metrics`: Faust's own sensor metrics and streamapp's, in one Prometheus registry.

streamapp's series are read from the partition states when Prometheus scrapes, so the hot path
keeps nothing but plain counters and the latency histograms (streamapp/histogram.py). Every
per-partition series is labelled `partition`; counters end in `_total`, units are seconds and
bytes, as Prometheus's naming conventions ask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamapp.partition import PartitionState
from streamapp.processor import Processor

#: (name without _total, help, value of a state)
COUNTERS: tuple[tuple[str, str, Callable[[PartitionState], float]], ...] = (
    ("streamapp_events", "Events applied by the partition's model (incl. refused).", lambda s: s.events_seen),
    ("streamapp_events_learned", "Events the model learned from.", lambda s: s.events_learned),
    ("streamapp_deadletters", "Events sent to the dead-letter topic.", lambda s: s.deadletters),
    ("streamapp_model_errors", "Events a model raised on despite every check.", lambda s: s.model_errors),
    ("streamapp_labels_late", "Late labels matched to a waiting event.", lambda s: s.labels_late),
    ("streamapp_labels_unknown", "Late labels of an unknown or expired id.", lambda s: s.labels_unknown),
    ("streamapp_pending_evicted", "Waiting events dropped (bounds, id reused).", lambda s: s.waiting.evicted),
    ("streamapp_pending_expired", "Unlabelled events dropped (age limit).", lambda s: s.waiting.expired),
    ("streamapp_gaps", "Offsets that arrived out of order and were fetched again.", lambda s: s.gaps),
    (
        "streamapp_events_replayed",
        "Events scored again after a recovery.",
        lambda s: s.runtime.events_replayed,
    ),
    (
        "streamapp_events_lost_to_retention",
        "Events deleted by retention before the model learned them.",
        lambda s: s.events_lost_to_retention,
    ),
    (
        "streamapp_snapshot_errors",
        "Snapshots that could not be written.",
        lambda s: s.runtime.snapshot_errors,
    ),
    (
        "streamapp_drifts",
        "Drifts ADWIN detected on the champion's errors.",
        lambda s: s.champion.drift.detections,
    ),
    ("streamapp_drift_rises", "Drifts where the champion's error rose.", lambda s: s.champion.drift.rises),
    ("streamapp_rollbacks", "Rollbacks of the partition's models to a kept snapshot.", lambda s: s.rollbacks),
)  # fmt: skip

GAUGES: tuple[tuple[str, str, Callable[[PartitionState], float]], ...] = (
    ("streamapp_offset_applied", "Offset of the last event applied to the model.", lambda s: s.offset),
    ("streamapp_pending_labels", "Events waiting for their label.", lambda s: len(s.waiting)),
    ("streamapp_pending_labels_bytes", "Bytes of the events waiting.", lambda s: s.waiting.bytes),
    ("streamapp_snapshot_offset", "Offset the latest snapshot holds.", lambda s: s.runtime.snapshot_offset),
    ("streamapp_snapshot_sequence", "Number of the latest snapshot.", lambda s: s.runtime.snapshot_seq),
    ("streamapp_snapshot_size_bytes", "Size of the latest snapshot.", lambda s: s.runtime.snapshot_bytes),
    (
        "streamapp_events_since_snapshot",
        "Records applied since the latest written snapshot: what a crash would replay.",
        lambda s: s.offset - s.runtime.snapshot_offset,
    ),
)  # fmt: skip


class ModelCollector(Collector):
    """The partitions this worker serves, as Prometheus series."""

    def __init__(
        self,
        processor: Processor,
        lag: Callable[[int], int | None],
        served: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        self.processor = processor
        self.lag = lag
        self.served = served

    def collect(self) -> Iterator[Metric]:
        states = sorted(self.processor.states.items())
        yield from self._states(states)
        yield from self._models(states, time.time())
        yield from self._worker()
        yield from self._timings()

    def _states(self, states: list[tuple[int, PartitionState]]) -> Iterator[Metric]:
        """COUNTERS and GAUGES: one number of each partition's state."""
        for name, doc, value in COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["partition"])
            for partition, state in states:
                counter.add_metric([str(partition)], value(state))
            yield counter
        for name, doc, value in GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["partition"])
            for partition, state in states:
                gauge.add_metric([str(partition)], value(state))
            yield gauge

    def _models(self, states: list[tuple[int, PartitionState]], now: float) -> Iterator[Metric]:
        """Snapshot age and lag where known, and every model's metrics."""
        age = GaugeMetricFamily(
            "streamapp_snapshot_age_seconds", "Seconds since the latest snapshot.", labels=["partition"]
        )
        lag = GaugeMetricFamily(
            "streamapp_consumer_lag_events", "Events in the partition not yet applied.", labels=["partition"]
        )
        metric = GaugeMetricFamily(
            "streamapp_model_metric",
            "Prequential metric of each model (champion and challengers).",
            labels=["partition", "model", "role", "metric"],
        )
        lead = GaugeMetricFamily(
            "streamapp_challenger_lead",
            "A challenger's prequential metric minus the champion's, positive when the challenger "
            "is better (whichever way the metric goes).",
            labels=["partition", "model", "metric"],
        )
        for partition, state in states:
            if state.runtime.snapshot_at:
                age.add_metric([str(partition)], now - state.runtime.snapshot_at)
            behind = self.lag(partition)
            if behind is not None:
                lag.add_metric([str(partition)], behind)
            for i, contender in enumerate(state.contenders):
                role = "champion" if i == state.champion_index else "challenger"
                for key, score in contender.metrics.values().items():
                    metric.add_metric([str(partition), contender.name, role, key], score)
                if role == "challenger":
                    for key, ahead in contender.metrics.lead_over(state.champion.metrics).items():
                        lead.add_metric([str(partition), contender.name, key], ahead)
        yield from (age, lag, metric, lead)

    def _worker(self) -> Iterator[Metric]:
        """What this worker holds and is set to, and its snapshots refused and children forked."""
        served = GaugeMetricFamily(
            "streamapp_partition_served",
            "1 for each events partition this worker holds as active (assigned, restoring or learning): "
            "summed over the workers, every partition must be 1.",
            labels=["partition"],
        )
        for partition in sorted(self.served()):
            served.add_metric([str(partition)], 1)
        yield served
        settings = self.processor.settings
        yield GaugeMetricFamily(
            "streamapp_events_topic_partitions",
            "Partitions of the events topic (STREAMAPP_PARTITIONS): the cluster serves each of them.",
            value=settings.partitions,
        )
        yield GaugeMetricFamily(
            "streamapp_snapshot_interval_seconds",
            "STREAMAPP_SNAPSHOT_EVERY_SECONDS: a partition that learns is snapshotted at least this "
            "often (+25%).",
            value=settings.snapshot_every_seconds,
        )
        refused = CounterMetricFamily(
            "streamapp_snapshots_refused",
            "Snapshots this worker refused to load (unsigned, forged, another partition's, a forbidden "
            "global): recovery and rollback passed over them.",
            labels=["partition"],
        )
        for partition, count in sorted(self.processor.store.refused.items()):
            refused.add_metric([str(partition)], count)
        yield refused
        yield CounterMetricFamily(
            "streamapp_snapshot_children",
            "Children forked to pickle a snapshot since this worker started (STREAMAPP_SNAPSHOT_IN).",
            value=self.processor.writer.forks,
        )

    def _timings(self) -> Iterator[Metric]:
        """Predictions, anomaly alerts and the latency histograms of each partition."""
        predictions = CounterMetricFamily(
            "streamapp_predictions",
            "Predictions emitted since this worker took the partition.",
            labels=["partition"],
        )
        histograms = {
            kind: HistogramMetricFamily(f"streamapp_{kind}_latency_seconds", doc, labels=["partition"])
            for kind, doc in (
                ("predict", "Time the model took to score an event."),
                ("learn", "Time the model took to learn from an event."),
                ("end_to_end", "From the event's Kafka timestamp to its prediction's hand-over."),
            )
        }
        alerts = CounterMetricFamily(
            "streamapp_alerts", "Anomaly scores at or above the alert threshold.", labels=["partition"]
        )
        for partition, timing in sorted(self.processor.timings.items()):
            predictions.add_metric([str(partition)], timing.predictions)
            alerts.add_metric([str(partition)], timing.alerts)
            for kind, histogram in (
                ("predict", timing.predict),
                ("learn", timing.learn),
                ("end_to_end", timing.end_to_end),
            ):
                histograms[kind].add_metric([str(partition)], histogram.cumulative(), histogram.total)
        yield predictions
        yield alerts
        yield from histograms.values()


def serve_metrics(
    app: faust.App,
    processor: Processor,
    lag: Callable[[int], int | None],
    served: Callable[[], Iterable[int]] = tuple,
) -> CollectorRegistry:
    """Register `/metrics` on the app: Faust's sensors (prefix `faust_`), the process, our models."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(ModelCollector(processor, lag, served))
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    return registry
