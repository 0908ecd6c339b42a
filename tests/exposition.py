"""What a worker's `GET /metrics` exports, as the series names a PromQL query can select: the
alert rules (k8s/components/alerts/) and the Grafana dashboard (k8s/components/grafana/) are
checked against it, so that a query of a metric nobody exports fails a test instead of staying
silent on an empty graph or an alert that can never fire."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import faust
import promql_parser
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamapp.partition import PartitionState
from streamapp.processor import Timing
from streamapp.prometheus import serve_metrics

#: Series Prometheus adds to every target itself (its scrape's health), not the worker.
SCRAPE_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)

#: The series a family of each type is read by (a counter's samples end in `_total`).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "unknown": ("",),
}


@dataclass
class FakeStore:
    refused: dict[int, int] = field(default_factory=dict)  # snapshots refused, per partition


@dataclass
class FakeProcessor:
    """What ModelCollector reads of a streamapp.processor.Processor."""

    states: dict[int, PartitionState] = field(default_factory=dict)
    timings: dict[int, Timing] = field(default_factory=dict)
    store: FakeStore = field(default_factory=FakeStore)
    writer: Any = field(default_factory=lambda: SimpleNamespace(forks=0))  # no child forked yet
    settings: Any = field(default_factory=lambda: SimpleNamespace(partitions=12, snapshot_every_seconds=45.0))


def series_names(text: str) -> set[str]:
    """Every series name the Prometheus text can hold, samples or not: a family with no
    series yet (no partition, no challenger) is still exported, with its HELP and TYPE."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def worker_exposition() -> str:
    """`/metrics` of a worker with no partition yet, from the worker's own registry (Faust's
    sensors, the process, streamapp's models), without Kafka."""
    app = faust.App("exposition", broker="kafka://127.0.0.1:1")
    registry = serve_metrics(app, FakeProcessor(), lambda partition: None)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def query_series(expr: str) -> set[str]:
    """The series names a PromQL expression selects, parsed (a syntax error raises): by name or
    by an exact `__name__` matcher; a selector by a name pattern is refused, as no test could
    say what it selects."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name:
            names.add(node.name)
        for matcher in node.matchers.matchers:
            if matcher.name == "__name__":
                if matcher.op != promql_parser.MatchOp.Equal:
                    raise ValueError(f"{expr!r}: a series selected by a name pattern")
                names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unknown_series(expr: str, exported: set[str]) -> set[str]:
    """The series `expr` selects that neither the worker nor Prometheus's scrape exports."""
    return query_series(expr) - exported - SCRAPE_SERIES
