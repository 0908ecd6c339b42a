"""streamapp's alert rules, written from one definition for both kinds of Prometheus.

    .venv/bin/python tools/alerts.py                  # writes k8s/components/alerts/
    .venv/bin/python tools/alerts.py --check          # fails when the committed files differ
    .venv/bin/python tools/alerts.py --set runbook_base=https://git.example.com/ops/runbooks \\
        --set lag_events=50000 --out k8s/overlays/prod/alerts

It writes `rules.yaml` (a plain rules file, for a Prometheus's `rule_files`), `prometheusrule.yaml`
(the same groups as a Prometheus Operator PrometheusRule) and `kustomization.yaml` (a kustomize
Component of it). Thresholds and `for` durations are the fields of `Parameters`: one dataclass, so
that the two files and the runbook links cannot drift apart. tests/deploy/test_alerts.py checks
the committed files against `--check`, the series against what /metrics exports, and runs the
promtool unit tests of k8s/components/alerts/tests.yaml.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPONENT = ROOT / "k8s" / "components" / "alerts"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
#: Labels that a typical Prometheus Operator's ruleSelector asks for: kube-prometheus-stack's Helm
#: chart selects `release: <its release name>`, kube-prometheus (jsonnet) `prometheus: k8s` and
#: `role: alert-rules`. A selector matches when its labels are a subset, so all can be present.
RULE_SELECTOR_LABELS = {"release": "kube-prometheus-stack", "prometheus": "k8s", "role": "alert-rules"}


@dataclass(frozen=True)
class Parameters:
    """What an operator tunes: a `--set name=value` each. Durations are Prometheus durations."""

    #: which scrape jobs are streamapp's workers (a label matcher list, without braces)
    job_selector: str = 'job=~".*streamapp.*"'
    #: labels that tell deployments apart (blue/green as two jobs): each is alerted on by itself
    group_by: str = "job"
    #: where `<kebab-case alert>.md` (docs/runbooks/) is served: set your copy of the repository
    runbook_base: str = "https://github.com/example/streamapp/blob/main/docs/runbooks"
    worker_down_for: str = "2m"
    no_workers_for: str = "5m"
    #: a rebalance leaves partitions unserved for seconds; longer is a worker that cannot take them
    partition_unserved_for: str = "5m"
    lag_events: int = 10000
    lag_trend_window: str = "10m"
    lag_for: str = "15m"
    latency_p99_seconds: float = 1.0
    latency_window: str = "5m"
    latency_for: str = "10m"
    #: overdue once the last snapshot is this many STREAMAPP_SNAPSHOT_EVERY_SECONDS old
    snapshot_overdue_factor: float = 4.0
    #: a partition learns when its events-since-snapshot count moved within this window
    learning_window: str = "5m"
    snapshot_overdue_for: str = "5m"
    snapshot_errors_window: str = "15m"
    deadletter_ratio: float = 0.01
    deadletter_window: str = "5m"
    deadletter_for: str = "10m"
    retention_loss_window: str = "15m"
    drift_window: str = "1h"
    #: the prequential metric the champion is judged by; it must be one where higher is better
    champion_metric: str = "rocauc"
    champion_floor: float = 0.7
    #: labelled events a partition must have learned before its metric is judged
    min_events_learned: int = 1000
    champion_for: str = "30m"
    challenger_margin: float = 0.02
    challenger_for: str = "6h"
    rollback_window: str = "1h"
    refused_window: str = "15m"
    gaps_window: str = "15m"
    gaps_max: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_for", "_window")) and not DURATION.match(value):
                raise ValueError(f"{f.name}={value!r} is not a Prometheus duration (30s, 5m, 1h30m)")
        if not self.group_by.strip():
            raise ValueError("group_by must name at least one label")

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults: what a regeneration must pass again."""
        defaults = asdict(Parameters())
        return {k: v for k, v in asdict(self).items() if v != defaults[k]}


@dataclass(frozen=True)
class Alert:
    """One alerting rule. severity: critical pages, warning waits for working hours, info is a
    record."""

    name: str
    severity: str
    expr: str
    summary: str
    description: str
    for_: str = ""  # empty: fires at the evaluation that finds it (counters over a window)

    @property
    def runbook(self) -> str:
        """The runbook's file name in docs/runbooks/: StreamappWorkerDown -> worker-down.md."""
        bare = self.name.removeprefix("Streamapp")
        return re.sub(r"(?<!^)(?=[A-Z])", "-", bare).lower() + ".md"


def _number(value: float) -> str:
    """1.0 -> 1, 0.01 -> 0.01: thresholds read as an operator writes them."""
    return f"{value:g}"


class Catalogue:
    """The alerts of one set of parameters: the selectors and phrases they share, then one
    method per rule group."""

    def __init__(self, p: Parameters) -> None:
        self.p = p
        self.g = p.group_by
        self.where = " ".join(f"{{{{ $labels.{label.strip()} }}}}" for label in self.g.split(","))
        self.part = f"partition {{{{ $labels.partition }}}} of {self.where}"

    def sel(self, series: str, /, **matchers: str) -> str:
        """The series of streamapp's jobs, with more label matchers."""
        found = [self.p.job_selector] if self.p.job_selector else []
        found += [f'{k}="{v}"' for k, v in matchers.items()]
        return f"{series}{{{', '.join(found)}}}" if found else series

    def counter_alert(self, metric: str, window: str, above: float) -> str:
        """Increase of a per-partition counter, summed over the workers: a partition that moves
        to another worker continues its counter there, and increase() skips the first sample."""
        return f"sum by ({self.g}, partition) (increase({self.sel(metric)}[{window}])) > {_number(above)}"

    def learned_enough(self) -> str:
        """Partitions that learned enough labels for their metrics to be judged."""
        learned = self.sel("streamapp_events_learned_total")
        return f"max by ({self.g}, partition) ({learned}) >= {self.p.min_events_learned}"

    def availability(self) -> list[Alert]:
        """Workers and partitions: is every partition served?"""
        p, g, where, sel = self.p, self.g, self.where, self.sel
        return [
            Alert(
                "StreamappWorkerDown",
                "critical",
                f"{sel('up')} == 0",
                "streamapp worker {{ $labels.instance }} is down",
                f"Prometheus has not scraped {{{{ $labels.instance }}}} ({where}) for {p.worker_down_for}: "
                "the worker is dead, hung or unreachable. The other workers take its partitions after "
                "the consumer session timeout; with none left they are not served.",
                p.worker_down_for,
            ),
            Alert(
                "StreamappNoWorkers",
                "critical",
                f"absent({sel('up')} == 1)",
                "No streamapp worker is up",
                f"No target matching {{{p.job_selector}}} has answered Prometheus for {p.no_workers_for}: "
                "no partition is learned and no prediction is made, or Prometheus lost the workers.",
                p.no_workers_for,
            ),
            Alert(
                "StreamappPartitionUnserved",
                "critical",
                # Partitions of the topic minus the distinct partitions some worker serves; `or ... * 0`
                # makes "none served" a 0 rather than no series at all.
                f"max by ({g}) ({sel('streamapp_events_topic_partitions')})\n"
                "- (\n"
                f"  count by ({g}) (count by ({g}, partition) ({sel('streamapp_partition_served')}))\n"
                f"  or max by ({g}) ({sel('streamapp_events_topic_partitions')}) * 0\n"
                ")\n"
                "> 0",
                f"{{{{ $value }}}} partitions of {where} are served by no worker",
                f"{{{{ $value }}}} partitions of the events topic of {where} have had no worker for "
                f"{p.partition_unserved_for}, longer than a rebalance: their events are neither learned "
                "nor scored. Too few workers run, or one cannot take its assignment (restoring, crashing).",
                p.partition_unserved_for,
            ),
        ]

    def processing(self) -> list[Alert]:
        """Events: behind, late, refused, lost or out of order."""
        p, g, where, part, sel = self.p, self.g, self.where, self.part, self.sel
        lag = sel("streamapp_consumer_lag_events")
        latency = sel("streamapp_end_to_end_latency_seconds_bucket")
        return [
            Alert(
                "StreamappConsumerLagGrowing",
                "warning",
                f"max by ({g}, partition) ({lag}) > {p.lag_events}\n"
                "and\n"
                f"max by ({g}, partition) (deriv({lag}[{p.lag_trend_window}])) > 0",
                f"Partition {{{{ $labels.partition }}}} of {where} falls behind",
                f"The {part} lags {{{{ $value | humanize }}}} events (threshold {p.lag_events}) and its lag "
                f"still grew over the last {p.lag_trend_window}: its worker does not keep up. Add "
                "workers (up to the partitions) or use a cheaper model.",
                p.lag_for,
            ),
            Alert(
                "StreamappEndToEndLatencyHigh",
                "warning",
                "histogram_quantile(\n"
                "  0.99,\n"
                f"  sum by ({g}, le) (rate({latency}[{p.latency_window}]))\n"
                f") > {_number(p.latency_p99_seconds)}",
                f"p99 end-to-end latency of {where} is high",
                "The 99th percentile from an event's Kafka timestamp to its prediction is "
                f"{{{{ $value | humanizeDuration }}}} over the last {p.latency_window} "
                f"(threshold {_number(p.latency_p99_seconds)}s): workers fall behind, pause (rebalances, "
                "recoveries) or producers stamp events late.",
                p.latency_for,
            ),
            Alert(
                "StreamappDeadLetterRateHigh",
                "warning",
                f"sum by ({g}) (rate({sel('streamapp_deadletters_total')}[{p.deadletter_window}]))\n"
                f"  / sum by ({g}) (rate({sel('streamapp_events_total')}[{p.deadletter_window}]))\n"
                f"  > {_number(p.deadletter_ratio)}\n"
                "and\n"
                f"sum by ({g}) (rate({sel('streamapp_events_total')}[{p.deadletter_window}])) > 0",
                f"Many events of {where} go to the dead-letter topic",
                f"{{{{ $value | humanizePercentage }}}} of the events of the last {p.deadletter_window} "
                f"were dead-lettered (threshold {_number(p.deadletter_ratio)}): a producer writes what the "
                "partitions cannot learn. Read streamapp.error.reason on the dead-letter topic.",
                p.deadletter_for,
            ),
            Alert(
                "StreamappRetentionLoss",
                "critical",
                self.counter_alert("streamapp_events_lost_to_retention_total", p.retention_loss_window, 0),
                f"Events of {part} were deleted before they were learned",
                f"Retention deleted {{{{ $value | humanize }}}} events of the {part} in the last "
                f"{p.retention_loss_window} before its model learned them: the model is no longer "
                "exact (RETENTION LOSS in the log). Lengthen the events topic's retention.",
            ),
            Alert(
                "StreamappGapsRepeated",
                "warning",
                self.counter_alert("streamapp_gaps_total", p.gaps_window, p.gaps_max),
                f"Repeated gaps in {part}",
                f"The {part} fetched {{{{ $value | humanize }}}} out-of-order offsets again in the last "
                f"{p.gaps_window} (threshold {p.gaps_max}): beyond the few a rebalance causes, the source "
                "topic is compacted or transactional (GAP: in the log).",
            ),
        ]

    def snapshots(self) -> list[Alert]:
        """Snapshots: overdue, failing, refused."""
        p, g, part, sel = self.p, self.g, self.part, self.sel
        return [
            Alert(
                "StreamappSnapshotOverdue",
                "warning",
                # An idle partition is not snapshotted by design, and one that stopped receiving keeps
                # its records since the snapshot (offset - snapshot offset): only a partition whose
                # count still moves, one that learns, is overdue.
                f"{sel('streamapp_snapshot_age_seconds')}\n"
                "  > ignoring (partition) group_left ()\n"
                f"  ({_number(p.snapshot_overdue_factor)} * {sel('streamapp_snapshot_interval_seconds')})\n"
                "and\n"
                f"changes({sel('streamapp_events_since_snapshot')}[{p.learning_window}]) > 0",
                f"Snapshots of {part} are overdue",
                f"The {part} on {{{{ $labels.instance }}}} has no snapshot written for "
                f"{{{{ $value | humanizeDuration }}}}, over {_number(p.snapshot_overdue_factor)} x "
                "STREAMAPP_SNAPSHOT_EVERY_SECONDS, while it learns events: a crash replays more and more. "
                "A snapshot child may hang, or snapshots fail (StreamappSnapshotNotWritten).",
                p.snapshot_overdue_for,
            ),
            Alert(
                "StreamappSnapshotNotWritten",
                "warning",
                self.counter_alert("streamapp_snapshot_errors_total", p.snapshot_errors_window, 0),
                f"Snapshots of {part} fail",
                f"{{{{ $value | humanize }}}} snapshots of the {part} could not be written in the last "
                f"{p.snapshot_errors_window} (SNAPSHOT NOT WRITTEN in the log): a state over "
                "STREAMAPP_MAX_SNAPSHOT_BYTES, or Kafka refusing it. Recovery replays more and more.",
            ),
            Alert(
                "StreamappSnapshotRefused",
                "critical",
                # The counter appears at the first refusal, already at 1, where increase() sees nothing:
                # a series that did not exist a window ago counts too.
                self.counter_alert("streamapp_snapshots_refused_total", p.refused_window, 0) + "\nor\n"
                f"sum by ({g}, partition) (\n"
                f"  {sel('streamapp_snapshots_refused_total')}\n"
                f"  unless {sel('streamapp_snapshots_refused_total')} offset {p.refused_window}\n"
                ")",
                f"A worker refused snapshots of {part}",
                f"{{{{ $value | humanize }}}} snapshots of the {part} were refused in the last "
                f"{p.refused_window} (unsigned, forged, another partition's, a forbidden global; "
                "SNAPSHOT REFUSED in the log): someone wrote the changelog topic, or a signing key was "
                "removed too early. Treat it as a security incident.",
            ),
        ]

    def models(self) -> list[Alert]:
        """Models: drift, a weak champion, a better challenger, rollbacks."""
        p, g, part, sel = self.p, self.g, self.part, self.sel
        metric = p.champion_metric
        return [
            Alert(
                "StreamappDriftDetected",
                "info",
                self.counter_alert("streamapp_drifts_total", p.drift_window, 0),
                f"Drift in {part}",
                f"ADWIN detected {{{{ $value | humanize }}}} drifts of the champion's error on the {part} "
                f"in the last {p.drift_window}: the data changed; the model adapts by itself.",
            ),
            Alert(
                "StreamappChampionMetricLow",
                "warning",
                f"min by ({g}, partition, model) (\n"
                f"  {sel('streamapp_model_metric', role='champion', metric=metric)}\n"
                f") < {_number(p.champion_floor)}\n"
                f"and on ({g}, partition)\n"
                f"{self.learned_enough()}",
                f"The champion of {part} scores low",
                f"The champion {{{{ $labels.model }}}} of the {part} has {metric} "
                f'{{{{ printf "%.3f" $value }}}}, below {_number(p.champion_floor)}, after at least '
                f"{p.min_events_learned} labelled events. Promote a better challenger or roll back. "
                f"The rule suits a metric where higher is better: for one where lower is better (MAE, "
                "log loss) set champion_metric to another metric.",
                p.champion_for,
            ),
            Alert(
                "StreamappChallengerAhead",
                "info",
                f"max by ({g}, partition, model) ({sel('streamapp_challenger_lead', metric=metric)})"
                f" > {_number(p.challenger_margin)}\n"
                f"and on ({g}, partition)\n"
                f"{self.learned_enough()}",
                f"A challenger of {part} beats the champion",
                f"The challenger {{{{ $labels.model }}}} of the {part} has been ahead of the champion by "
                f'{{{{ printf "%.3f" $value }}}} {metric} (margin {_number(p.challenger_margin)}) for '
                f"{p.challenger_for}: consider promoting it (POST /models/<partition>/promote).",
                p.challenger_for,
            ),
            Alert(
                "StreamappRollback",
                "warning",
                self.counter_alert("streamapp_rollbacks_total", p.rollback_window, 0),
                f"The {part} was rolled back",
                f"The models of the {part} were rolled back {{{{ $value | humanize }}}} times to a kept "
                f"snapshot in the last {p.rollback_window}, through POST /models/<partition>/rollback "
                "(the only way); see the partition's audit trail in /models/<partition>.",
            ),
        ]


def groups(p: Parameters) -> list[tuple[str, list[Alert]]]:
    """Every alert, by rule group. $value in a description is the expression's value."""
    alerts = Catalogue(p)
    return [
        ("streamapp-availability", alerts.availability()),
        ("streamapp-processing", alerts.processing()),
        ("streamapp-snapshots", alerts.snapshots()),
        ("streamapp-models", alerts.models()),
    ]


def rule_groups(p: Parameters) -> list[dict[str, Any]]:
    """The groups as a rules file (and a PrometheusRule's spec) hold them."""
    base = p.runbook_base.rstrip("/")

    def rule(alert: Alert) -> dict[str, Any]:
        doc: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        if alert.for_:
            doc["for"] = alert.for_
        doc["labels"] = {"severity": alert.severity}
        doc["annotations"] = {
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": f"{base}/{alert.runbook}",
        }
        return doc

    return [{"name": name, "rules": [rule(a) for a in alerts]} for name, alerts in groups(p)]


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as in the rest of k8s/; long lines kept whole (a folded
    line would split a template such as {{ $labels.partition }})."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Expressions on several lines stay as written (a literal block)."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def _yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=2**16, allow_unicode=True)


def command(p: Parameters) -> str:
    """The command line that writes these files again."""
    sets = "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in p.changed().items())
    return f".venv/bin/python tools/alerts.py{sets} --out DIR"


def render(p: Parameters) -> dict[str, str]:
    """The component's files, by name."""
    header = (
        f"# Generated by tools/alerts.py: do not edit by hand. Regenerate with\n"
        f"#   {command(p)}\n"
        "# (the committed k8s/components/alerts/ has the defaults; tools/alerts.py's Parameters lists\n"
        "# what --set can change: thresholds, `for` durations, the job selector). Each alert's\n"
        "# runbook_url is <runbook_base>/<alert, kebab-case>.md, docs/runbooks/ of this repository:\n"
        "# point it at your copy with --set runbook_base=https://<your git host>/<path>/docs/runbooks\n"
    )
    rules = (
        "# streamapp's alert rules for a Prometheus that scrapes every worker's /metrics: list this\n"
        "# file in its rule_files. The Prometheus Operator takes prometheusrule.yaml instead.\n"
        + header
        + _yaml({"groups": rule_groups(p)})
    )
    labels = {"app.kubernetes.io/name": "streamapp", "app.kubernetes.io/component": "alerts"}
    prometheus_rule = (
        "# streamapp's alert rules for the Prometheus Operator: the groups of rules.yaml. A Prometheus\n"
        "# loads the PrometheusRules its spec.ruleSelector matches (and ruleNamespaceSelector): the\n"
        "# labels below suit kube-prometheus-stack installed as release kube-prometheus-stack\n"
        "# (release) and kube-prometheus (prometheus, role); see yours with\n"
        "#   kubectl get prometheus -A -o jsonpath='{..ruleSelector}'\n"
        "# and patch metadata.labels in your overlay to match.\n"
        + header
        + _yaml(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "streamapp", "labels": {**labels, **RULE_SELECTOR_LABELS}},
                "spec": {"groups": rule_groups(p)},
            }
        )
    )
    kustomization = (
        "# streamapp's alert rules as a PrometheusRule, for the Prometheus Operator.\n"
        + header
        + _yaml(
            {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "resources": ["prometheusrule.yaml"],
            }
        )
    )
    return {"rules.yaml": rules, "prometheusrule.yaml": prometheus_rule, "kustomization.yaml": kustomization}


def parameters(assignments: Sequence[str]) -> Parameters:
    """Parameters from `name=value` strings, each value of its default's type."""
    defaults = Parameters()
    known = {f.name for f in fields(Parameters)}
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or name not in known:
            raise ValueError(
                f"--set {assignment!r}: expected NAME=VALUE, NAME one of {', '.join(sorted(known))}"
            )
        kind = type(getattr(defaults, name))
        try:
            changes[name] = kind(raw)
        except ValueError:
            raise ValueError(f"--set {assignment!r}: {name} takes a {kind.__name__}") from None
    return replace(defaults, **changes)


def stale(directory: Path, files: dict[str, str]) -> list[str]:
    """The files of `files` that `directory` lacks or holds with other text."""
    return [
        name
        for name, text in files.items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a parameter")
    parser.add_argument("--out", type=Path, default=COMPONENT, help=f"directory (default {COMPONENT})")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the files differ")
    args = parser.parse_args(argv)
    try:
        params = parameters(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    files = render(params)
    if args.check:
        differ = stale(args.out, files)
        if differ:
            print(
                f"{args.out}: {', '.join(differ)} differ from tools/alerts.py's output; regenerate with\n"
                f"  {command(params).replace('DIR', str(args.out))}",
                file=sys.stderr,
            )
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
