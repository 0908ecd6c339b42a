"""k8s/components/grafana/streamapp-dashboard.json, the on-call engineer's Grafana dashboard,
generated with grafana-foundation-sdk (Grafana Labs' typed builders) instead of kept by hand.

    .venv/bin/python tools/grafana_dashboard.py            # write the JSON
    .venv/bin/python tools/grafana_dashboard.py --check    # exit 1 if the committed JSON differs

Every worker exports only the partitions it holds, so per-partition queries aggregate `by
(partition)` over all workers (`max` for gauges, `sum` of rates for counters: a partition that
moved starts a new series on its new worker) and totals sum over them. tests/deploy/test_grafana.py
checks that the committed JSON is this output, that every query parses and selects only series a
worker exports, and the layout.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The SDK's classic models warn on import, steering to its v2 (Kubernetes-style) schema,
    # which Grafana reads only behind a feature flag; the classic JSON model is what the sidecar
    # and "Import" take on any Grafana.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import stat, timeseries
    from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions, VizTooltipOptions
    from grafana_foundation_sdk.builders.dashboard import (
        Dashboard,
        DatasourceVariable,
        QueryVariable,
        Row,
        ThresholdsConfig,
    )
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import (
        BigValueGraphMode,
        DataSourceRef,
        LegendDisplayMode,
        LegendPlacement,
        SortOrder,
        TooltipDisplayMode,
    )
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync,
        Threshold,
        ThresholdsMode,
        VariableModel,
        VariableRefresh,
        VariableSort,
    )

TARGET = Path(__file__).resolve().parents[1] / "k8s" / "components" / "grafana" / "streamapp-dashboard.json"
COMMAND = ".venv/bin/python tools/grafana_dashboard.py"
UID = "streamapp-oncall"  # stable: links and the sidecar's updates find the same dashboard
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="$job"'
PARTITIONS = f'{JOB}, partition=~"$partition"'
METRIC = 'metric="$metric"'  # one prequential metric at a time: log loss falls as ROCAUC rises
RATE = "[$__rate_interval]"
RANGE = "[$__range]"

PanelBuilder = timeseries.Panel | stat.Panel


def per_partition(metric: str, extra: str = "") -> str:
    """A selector of the chosen job's series, narrowed to the chosen partitions."""
    return f"{metric}{{{PARTITIONS}{extra}}}"


def rate_by_partition(counter: str) -> str:
    """Per second, per partition, summed over the workers that held it."""
    return f"sum by (partition) (rate({per_partition(counter)}{RATE}))"


def quantile(q: float, histogram: str, by: str = "le") -> str:
    """A latency quantile from the _bucket series of the chosen partitions on every worker."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({per_partition(histogram + '_bucket')}{RATE})))"


def dead_letter_ratio(by: str = "") -> str:
    """Dead letters over all records decided (events applied + dead letters)."""
    grouping = f" by ({by}) " if by else ""
    letters = f"sum{grouping}(rate({per_partition('streamapp_deadletters_total')}{RATE}))"
    events = f"sum{grouping}(rate({per_partition('streamapp_events_total')}{RATE}))"
    return f"{letters} / ({events} + {letters})"


def query(expr: str, legend: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Colour steps, from the base (None) up."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


OK_UNLESS_ANY = thresholds((None, "green"), (1, "red"))


def graph(
    title: str,
    unit: str,
    description: str,
    *targets: Dataquery,
    width: int = 8,
    floor: float | None = 0,
) -> timeseries.Panel:
    """A time series panel: every series in the tooltip, highest first, and a legend table with
    each series' last and highest values."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    if floor is not None:
        panel.min(floor)
    for ref, target in zip("ABCDEFGH", targets, strict=False):
        panel.with_target(target.ref_id(ref))
    return panel


def single(
    title: str,
    unit: str,
    description: str,
    *targets: Dataquery,
    steps: ThresholdsConfig | None = None,
    width: int = 4,
) -> stat.Panel:
    """A stat panel: the last value, coloured by its thresholds."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(4)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(steps or thresholds((None, "blue")))
    )
    for ref, target in zip("ABCDEFGH", targets, strict=False):
        panel.with_target(target.ref_id(ref))
    return panel


def in_range(title: str, counter: str, description: str) -> stat.Panel:
    """A rare event's count over the dashboard's time range: anything above 0 is red."""
    # increase() extrapolates to the range's ends (1 drift reads 1.02): counts are whole.
    expr = f"round(sum(increase({per_partition(counter)}{RANGE}))) or vector(0)"
    return single(title, "short", description, query(expr, title), steps=OK_UNLESS_ANY)


def overview() -> list[PanelBuilder]:
    served = f"sum(streamapp_partition_served{{{JOB}}}) or vector(0)"
    return [
        single(
            "Workers down",
            "none",
            "Scraped workers whose /metrics did not answer at the last scrape (targets minus up). "
            "Above 0: a worker is down, restarting or unreachable (NetworkPolicy, PodMonitor). A "
            "worker Prometheus does not find at all is not counted: see Workers up vs. targets.",
            query(f"count(up{{{JOB}}}) - sum(up{{{JOB}}})", "down"),
            steps=OK_UNLESS_ANY,
        ),
        single(
            "Partitions unserved",
            "none",
            "Partitions of the events topic that no worker holds as active (topic partitions minus "
            "those served). Above 0 for more than a rebalance (seconds): their events wait and their "
            "models learn nothing. Below 0: a partition is held twice.",
            query(f"max(streamapp_events_topic_partitions{{{JOB}}}) - ({served})", "unserved"),
            steps=thresholds((None, "red"), (0, "green"), (1, "red")),
        ),
        single(
            "Events/s",
            "ops",
            "Events the chosen partitions' models applied per second, all workers. A drop to 0 while "
            "producers send: the workers are stuck or not consuming (see lag).",
            query(f"sum(rate({per_partition('streamapp_events_total')}{RATE}))", "events/s"),
        ),
        single(
            "Consumer lag",
            "short",
            "Events in the chosen partitions not yet applied, summed. Growing: the workers fall behind "
            "(scale out, or a slow model); KEDA scales on the same lag.",
            query(
                f"sum(max by (partition) ({per_partition('streamapp_consumer_lag_events')}))",
                "lag",
            ),
            steps=thresholds((None, "green"), (10000, "orange"), (100000, "red")),
        ),
        single(
            "End-to-end p99",
            "s",
            "99th percentile from the event's Kafka timestamp to its prediction. High: the workers "
            "lag, a model is slow, or producers' clocks are off.",
            query(quantile(0.99, "streamapp_end_to_end_latency_seconds"), "p99"),
            steps=thresholds((None, "green"), (1, "orange"), (10, "red")),
        ),
        single(
            "Dead-letter ratio",
            "percentunit",
            "Share of records sent to the dead-letter topic instead of the model. Above a few "
            "percent: producers send malformed events or a model raises (see model errors).",
            query(dead_letter_ratio(), "ratio"),
            steps=thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
    ]


def cluster() -> list[PanelBuilder]:
    panels = [
        graph(
            "Workers up vs. targets",
            "none",
            "Targets up and scraped. A gap between the two: a worker is down or its /metrics does "
            "not answer; fewer targets than replicas: Prometheus does not find the pods.",
            query(f"sum(up{{{JOB}}})", "up"),
            query(f"count(up{{{JOB}}})", "targets"),
        ),
        graph(
            "Partitions served vs. topic partitions",
            "none",
            "Partitions held as active by some worker against the topic's partitions. Served below "
            "the topic for longer than a rebalance: partitions are unserved; above: one is held twice.",
            query(f"sum(streamapp_partition_served{{{JOB}}})", "served"),
            query(f"max(streamapp_events_topic_partitions{{{JOB}}})", "topic partitions"),
        ),
        graph(
            "Partitions per worker",
            "none",
            "Active partitions each worker holds. Uneven for long: one worker carries more models "
            "than the others (partitions not a multiple of the workers).",
            query(f"sum by (instance) (streamapp_partition_served{{{JOB}}})", "{{instance}}"),
        ),
        graph(
            "Rebalances completed",
            "short",
            "Rebalances each worker finished per interval (Faust's in-progress gauge lasts seconds, "
            "too short for a scrape to see). A few around a deploy or a crash are normal; a steady "
            "stream: the group's membership flaps (crash loops, missed heartbeats).",
            query(
                f"sum by (instance) (increase(faust_rebalance_done_latency_count{{{JOB}}}{RATE}))",
                "{{instance}}",
            ),
        ),
    ]
    return [panel.span(6) for panel in panels]  # four side by side


def throughput() -> list[PanelBuilder]:
    return [
        graph(
            "Events/s per partition",
            "ops",
            "Events applied per second. A partition at 0 while others flow: it is unserved, stuck "
            "or its producers stopped.",
            query(rate_by_partition("streamapp_events_total"), "{{partition}}"),
        ),
        graph(
            "Learned/s per partition",
            "ops",
            "Events the model learned from per second (labelled on arrival or matched to a late "
            "label). Far below events/s: labels are missing or arrive too late.",
            query(rate_by_partition("streamapp_events_learned_total"), "{{partition}}"),
        ),
        graph(
            "Consumer lag per partition",
            "short",
            "Events not yet applied. Growing on one partition: its worker is overloaded or its "
            "model slow; on all: too few workers.",
            query(
                f"max by (partition) ({per_partition('streamapp_consumer_lag_events')})",
                "{{partition}}",
            ),
        ),
    ]


def latency() -> list[PanelBuilder]:
    end_to_end = "streamapp_end_to_end_latency_seconds"
    return [
        graph(
            "End-to-end latency",
            "s",
            "From the event's Kafka timestamp to its prediction's hand-over, over the chosen "
            "partitions. p99 rising while p50 stays: stalls (snapshots, rebalances); both: lag.",
            query(quantile(0.5, end_to_end), "p50"),
            query(quantile(0.99, end_to_end), "p99"),
        ),
        graph(
            "End-to-end p99 per partition",
            "s",
            "The same p99 per partition: one partition high finds the worker or model to look at.",
            query(quantile(0.99, end_to_end, by="partition, le"), "{{partition}}"),
        ),
        graph(
            "Model time p99",
            "s",
            "Time the model took to score (predict) and to learn from an event. Rising: the model "
            "grows (trees deepen, more features); a worker then sustains fewer events/s.",
            query(quantile(0.99, "streamapp_predict_latency_seconds"), "predict p99"),
            query(quantile(0.99, "streamapp_learn_latency_seconds"), "learn p99"),
        ),
    ]


def failures() -> list[PanelBuilder]:
    return [
        graph(
            "Dead letters/s per partition",
            "ops",
            "Records sent to the dead-letter topic. Above 0: malformed events, unknown features or "
            "labels, or a model that raised; the dead letter's reason says which.",
            query(rate_by_partition("streamapp_deadletters_total"), "{{partition}}"),
        ),
        graph(
            "Dead-letter ratio per partition",
            "percentunit",
            "Share of each partition's records that went to the dead-letter topic. One partition "
            "high: one producer (key) sends bad events.",
            query(dead_letter_ratio(by="partition"), "{{partition}}"),
        ),
        graph(
            "Model errors/s per partition",
            "ops",
            "Events a model raised on despite every check (sent to the dead-letter topic). Any: a "
            "bug or a model that cannot take this data; the worker logs the traceback.",
            query(rate_by_partition("streamapp_model_errors_total"), "{{partition}}"),
        ),
        in_range(
            "Snapshot errors",
            "streamapp_snapshot_errors_total",
            "Snapshots that could not be written in the time range. Any: a crash would replay more "
            "(see events since snapshot); look for a model over STREAMAPP_MAX_SNAPSHOT_BYTES.",
        ),
        in_range(
            "Snapshots refused",
            "streamapp_snapshots_refused_total",
            "Snapshots a worker refused to load (unsigned, forged, another partition's). Any: a "
            "signing key mismatch or tampering; recovery fell back to an older snapshot.",
        ),
        in_range(
            "Rollbacks",
            "streamapp_rollbacks_total",
            "Models rolled back to a kept snapshot in the time range. Unexpected ones: someone or "
            "something called POST /models/<p>/rollback.",
        ),
        in_range(
            "Drifts",
            "streamapp_drifts_total",
            "Concept drifts ADWIN detected on the champions' errors. Many at once: the data changed "
            "(a release upstream, a new population); check the model metrics.",
        ),
        in_range(
            "Events lost to retention",
            "streamapp_events_lost_to_retention_total",
            "Events Kafka deleted before a model learned them. Any: a worker was behind for longer "
            "than the topic's retention; raise retention or the workers.",
        ),
        in_range(
            "Gaps",
            "streamapp_gaps_total",
            "Offsets that arrived out of order and were fetched again. Many: the consumer skipped "
            "records (a broker or client problem).",
        ),
    ]


def snapshots() -> list[PanelBuilder]:
    return [
        graph(
            "Snapshot age",
            "s",
            "Seconds since each partition's latest snapshot, with the configured interval. Above "
            "1.25 x the interval on a partition that learns: snapshots fail or stall, and a crash "
            "would replay more. An idle partition is not snapshotted, so its age grows harmlessly.",
            query(f"max by (partition) ({per_partition('streamapp_snapshot_age_seconds')})", "{{partition}}"),
            query(f"max(streamapp_snapshot_interval_seconds{{{JOB}}})", "interval"),
        ),
        graph(
            "Snapshot size",
            "bytes",
            "Size of each partition's latest snapshot. Near STREAMAPP_MAX_SNAPSHOT_BYTES: the next "
            "ones will fail; growing without bound: the model grows (size the memory limit).",
            query(f"max by (partition) ({per_partition('streamapp_snapshot_size_bytes')})", "{{partition}}"),
        ),
        graph(
            "Events since snapshot",
            "short",
            "Events applied since the latest snapshot: what a crash would replay. Growing past one "
            "interval's worth: snapshots are not being taken.",
            query(
                f"max by (partition) ({per_partition('streamapp_events_since_snapshot')})",
                "{{partition}}",
            ),
        ),
    ]


def models() -> list[PanelBuilder]:
    def metric(role: str) -> str:
        selector = per_partition("streamapp_model_metric", f', role="{role}", {METRIC}')
        return f"max by (partition, model) ({selector})"

    legend = "{{partition}} {{model}}"
    return [
        graph(
            "Champion metric per partition",
            "none",
            "The chosen prequential metric ($metric) of each partition's champion (the model whose "
            "predictions are emitted). A fall (or a rise of an error metric such as log loss): the "
            "data drifted or the model broke.",
            query(metric("champion"), legend),
            floor=None,
        ),
        graph(
            "Challenger metric per partition",
            "none",
            "The same metric for the challengers (STREAMAPP_CHALLENGERS), which learn in the shadow. "
            "Empty without challengers.",
            query(metric("challenger"), legend),
            floor=None,
        ),
        graph(
            "Challenger lead",
            "none",
            "A challenger's metric minus the champion's, positive when the challenger is better. "
            "Positive for long: promote it (POST /models/<p>/promote) or set STREAMAPP_PROMOTE_AFTER.",
            query(
                f"max by (partition, model) ({per_partition('streamapp_challenger_lead', f', {METRIC}')})",
                legend,
            ),
            floor=None,  # negative: the champion leads
        ),
    ]


def deployments() -> list[PanelBuilder]:
    """Every job at once, whatever $job is: a blue/green upgrade (docs/runbooks/upgrade.md) runs
    the new version as a group and a job of its own beside the old one, on the same events."""
    chosen = 'partition=~"$partition"'
    return [
        graph(
            "Champion metric per deployment",
            "none",
            "Each job's champion metric, averaged over the chosen partitions: blue against green "
            "during an upgrade. Switch only when green's is as good as blue's; once green has "
            "caught up on every event, an unchanged model gives equal values.",
            query(
                f'avg by (job) (streamapp_model_metric{{role="champion", {METRIC}, {chosen}}})',
                "{{job}}",
            ),
            width=12,
            floor=None,
        ),
        graph(
            "Consumer lag per deployment",
            "short",
            "Events each job has not applied yet. Green catches up from the retained log; switch "
            "when it is 0 (and blue is stopped).",
            query(f"sum by (job) (streamapp_consumer_lag_events{{{chosen}}})", "{{job}}"),
            width=12,
        ),
    ]


def process() -> list[PanelBuilder]:
    return [
        graph(
            "Memory (RSS) per worker",
            "bytes",
            "Resident memory of each worker. Near the container's limit (1 GiB in the base): the "
            "kernel kills it (OOMKilled); rising steadily: models or waiting events grow.",
            query(f"max by (instance) (process_resident_memory_bytes{{{JOB}}})", "{{instance}}"),
            width=12,
        ),
        graph(
            "CPU per worker",
            "percentunit",
            "CPU time per second of each worker (100% = one core). A worker is one event loop: near "
            "100% it is at capacity and lag grows; add workers.",
            query(
                f"sum by (instance) (rate(process_cpu_seconds_total{{{JOB}}}{RATE}))",
                "{{instance}}",
            ),
            width=12,
        ),
    ]


ROWS = (
    ("Overview", overview),
    ("Workers and partitions", cluster),
    ("Throughput and lag", throughput),
    ("Latency", latency),
    ("Dead letters and errors", failures),
    ("Snapshots", snapshots),
    ("Models", models),
    ("Deployments side by side (blue/green upgrade)", deployments),
    ("Worker processes", process),
)


def variables() -> list[Builder[VariableModel]]:
    """Prometheus data source, job, partitions (any subset): the queries' $-variables."""
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        QueryVariable("job")
        .label("Job")
        .datasource(DATASOURCE)
        .query("label_values(streamapp_events_topic_partitions, job)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC),
        QueryVariable("partition")
        .label("Partition")
        .datasource(DATASOURCE)
        .query(f"label_values(streamapp_partition_served{{{JOB}}}, partition)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.NUMERICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*"),
        QueryVariable("metric")
        .label("Metric")
        .datasource(DATASOURCE)
        .query(f"label_values(streamapp_model_metric{{{JOB}}}, metric)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC),
    ]


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model, panels numbered in order."""
    dashboard = (
        Dashboard("streamapp")
        .uid(UID)
        .description("streamapp workers for the on-call engineer: generated by tools/grafana_dashboard.py")
        .tags(["streamapp", "kafka", "generated"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .variables(variables())
    )
    ident = 0
    for title, panels in ROWS:
        ident += 1
        dashboard.with_row(Row(title).id(ident))
        for panel in panels():
            ident += 1
            dashboard.with_panel(panel.id(ident))
    model: dict[str, object] = json.loads(JSONEncoder().encode(dashboard.build()))
    return model


def render() -> str:
    """The file's text: sorted keys and a fixed indent, so that the output is byte-stable."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        TARGET.write_text(text)
        return 0
    if TARGET.exists() and TARGET.read_text() == text:
        return 0
    print(f"{TARGET} is not what the generator writes: run {COMMAND}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
