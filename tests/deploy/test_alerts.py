"""The alert rules (k8s/components/alerts/, written by tools/alerts.py), checked offline.

The committed files are the generator's output; promtool (Debian's prometheus package,
tools/install_prometheus.sh) accepts rules.yaml and passes its unit tests (tests.yaml: every
alert firing on some input and quiet on another); every series an expression selects is one a
worker's /metrics exports (tests/exposition.py); every alert has a severity, a summary, a
description and a runbook in docs/runbooks/; the PrometheusRule holds the same groups and
satisfies the CRD's schema. The mutation tests at the end break a rule for each check and show
that it is caught.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.test_k8s import custom_resource_problems
from tests.exposition import series_names, unknown_series, worker_exposition

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "k8s" / "components" / "alerts"
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = {"critical", "warning", "info"}
#: The runbooks' file names in docs/runbooks/, one per alert: <name without Streamapp, kebab-case>.md.
RUNBOOK_FILES = {
    "StreamappWorkerDown": "worker-down.md",
    "StreamappNoWorkers": "no-workers.md",
    "StreamappPartitionUnserved": "partition-unserved.md",
    "StreamappConsumerLagGrowing": "consumer-lag-growing.md",
    "StreamappEndToEndLatencyHigh": "end-to-end-latency-high.md",
    "StreamappDeadLetterRateHigh": "dead-letter-rate-high.md",
    "StreamappRetentionLoss": "retention-loss.md",
    "StreamappGapsRepeated": "gaps-repeated.md",
    "StreamappSnapshotOverdue": "snapshot-overdue.md",
    "StreamappSnapshotNotWritten": "snapshot-not-written.md",
    "StreamappSnapshotRefused": "snapshot-refused.md",
    "StreamappDriftDetected": "drift-detected.md",
    "StreamappChampionMetricLow": "champion-metric-low.md",
    "StreamappChallengerAhead": "challenger-ahead.md",
    "StreamappRollback": "rollback.md",
}

Doc = dict[str, Any]


def _generator() -> ModuleType:
    """tools/alerts.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("alerts", ROOT / "tools" / "alerts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


alerts = _generator()
DEFAULTS = alerts.Parameters()


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool, installed once by tools/install_prometheus.sh when missing (apt, as root or sudo)."""
    if not shutil.which("promtool"):
        subprocess.run([str(ROOT / "tools" / "install_prometheus.sh")], check=False, timeout=600)
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool cannot be installed here (tools/install_prometheus.sh: no root, no sudo, no apt)"
        )
    return found


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return series_names(worker_exposition())


def rule_groups(path: Path) -> list[Doc]:
    groups: list[Doc] = yaml.safe_load(path.read_text())["groups"]
    return groups


def rules_of(groups: list[Doc]) -> list[Doc]:
    return [rule for group in groups for rule in group["rules"]]


# -------------------------------------------------------------------------------------- checks


def series_problems(groups: list[Doc], exported: set[str]) -> list[str]:
    """Every series an expression selects is exported by a worker or by Prometheus's scrape."""
    problems = []
    for rule in rules_of(groups):
        unknown = unknown_series(rule["expr"], exported)
        if unknown:
            problems.append(f"{rule['alert']}: {sorted(unknown)} are not in a worker's /metrics")
    return problems


def annotation_problems(groups: list[Doc], runbooks: Path, base: str) -> list[str]:
    """A severity an on-call rota routes on, a summary and description, and a runbook that exists."""
    problems = []
    for rule in rules_of(groups):
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations", {})
        problems += [f"{name}: no {key}" for key in ("summary", "description") if not annotations.get(key)]
        url, file = annotations.get("runbook_url"), RUNBOOK_FILES.get(name, "?")
        if url != f"{base}/{file}":
            problems.append(f"{name}: runbook_url {url!r}, expected {base}/{file}")
        elif not (runbooks / file).is_file():
            problems.append(f"{name}: no runbook {runbooks / file}")
    return problems


def promtool_problems(promtool: str, *args: str) -> list[str]:
    """promtool's complaints (check rules, test rules): its output when it exits non-zero."""
    done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
    return [] if done.returncode == 0 else [done.stdout + done.stderr]


def write_rules(directory: Path, groups: list[Doc]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------- tests


def test_the_committed_files_are_the_generators_output() -> None:
    assert alerts.stale(COMPONENT, alerts.render(DEFAULTS)) == []
    assert alerts.main(["--check"]) == 0


def test_check_fails_on_a_file_edited_by_hand(tmp_path: Path) -> None:
    assert alerts.main(["--out", str(tmp_path)]) == 0
    assert alerts.main(["--check", "--out", str(tmp_path)]) == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules.read_text().replace("> 10000", "> 20000"))
    assert alerts.main(["--check", "--out", str(tmp_path)]) == 1


def test_set_changes_a_parameter_and_says_so_in_the_header(tmp_path: Path) -> None:
    args = ["--set", "lag_events=50000", "--set", "lag_for=30m", "--set", "runbook_base=https://x.test/rb/"]
    assert alerts.main([*args, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "rules.yaml").read_text()
    assert "> 50000\n" in text and "for: 30m" in text and "https://x.test/rb/worker-down.md" in text
    assert "--set runbook_base=https://x.test/rb/ --set lag_events=50000 --set lag_for=30m --out" in text
    for bad in ("lag_event=1", "lag_events", "lag_events=ten", "lag_for=15 minutes", "group_by= "):
        with pytest.raises(ValueError):
            alerts.parameters([bad])


def test_promtool_accepts_the_rules(promtool: str) -> None:
    assert promtool_problems(promtool, "check", "rules", str(COMPONENT / "rules.yaml")) == []


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert promtool_problems(promtool, "test", "rules", str(COMPONENT / "tests.yaml")) == []


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not() -> None:
    cases = yaml.safe_load((COMPONENT / "tests.yaml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            expected = check.get("exp_alerts") or []
            (fires if expected else quiet).add(check["alertname"])
            for alert in expected:
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, alert
                assert alert["exp_labels"]["severity"] in SEVERITIES, alert
    names = {rule["alert"] for rule in rules_of(rule_groups(COMPONENT / "rules.yaml"))}
    assert names == set(RUNBOOK_FILES)
    assert fires == names and quiet == names, (names - fires, names - quiet)


def test_every_series_is_exported(exported: set[str]) -> None:
    assert series_problems(rule_groups(COMPONENT / "rules.yaml"), exported) == []


def runbook_queries(runbooks: Path) -> list[tuple[str, str]]:
    """(runbook, query) for each line of the runbooks' ```promql blocks: one query a line, as an
    on-call engineer pastes them."""
    found = []
    for path in sorted(runbooks.glob("*.md")):
        inside = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                inside = line == "```promql"
            elif inside and line.strip():
                found.append((path.name, line.strip()))
    return found


def test_every_runbook_query_parses_and_selects_exported_series(exported: set[str]) -> None:
    """A runbook's query is pasted at 3 a.m.: a typo or a renamed metric would answer nothing."""
    queries = runbook_queries(RUNBOOKS)
    assert {runbook for runbook, _ in queries} == set(RUNBOOK_FILES.values())
    problems = [
        f"{runbook}: {q}: {sorted(bad)}" for runbook, q in queries if (bad := unknown_series(q, exported))
    ]
    assert problems == []
    with pytest.raises(ValueError):  # promql-parser's syntax error
        unknown_series(queries[0][1] + " +", exported)


def test_every_alert_has_a_severity_a_summary_and_its_runbook() -> None:
    """Each alert's runbook_url names its file in docs/runbooks/ (worker-down.md, ...), which exists."""
    groups = rule_groups(COMPONENT / "rules.yaml")
    assert annotation_problems(groups, RUNBOOKS, DEFAULTS.runbook_base) == []


def test_the_prometheus_rule_holds_the_same_groups_and_fits_the_crd() -> None:
    rule = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    assert rule["spec"]["groups"] == rule_groups(COMPONENT / "rules.yaml")
    assert custom_resource_problems(rule) == []
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are the list's map key in the CRD"
    assert alerts.RULE_SELECTOR_LABELS.items() <= rule["metadata"]["labels"].items()
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component" and component["resources"] == ["prometheusrule.yaml"]


# -------------------------------------------------------------------------- the checks can fail


def changed(groups: list[Doc], alert: str, change: Callable[[Doc], object]) -> list[Doc]:
    """A broken copy: `change` applied to the rule of `alert`."""
    broken = copy.deepcopy(groups)
    change(next(rule for rule in rules_of(broken) if rule["alert"] == alert))
    return broken


def set_expr(expr: str) -> Callable[[Doc], None]:
    return lambda rule: rule.__setitem__("expr", expr)


def write_runbooks(directory: Path) -> None:
    for file in RUNBOOK_FILES.values():
        (directory / file).write_text("# runbook\n")


def drop_annotation(key: str) -> Callable[[Doc], None]:
    return lambda rule: rule["annotations"].pop(key)


@pytest.mark.parametrize(
    "expr",
    [
        'increase(streamapp_rollback_total{job="streamapp"}[1h]) > 0',  # misspelt
        "increase(streamapp_drifts[1h]) > 0",  # a counter without _total
        "streamapp_snapshot_age > 60",  # no such gauge
        'rate({__name__="streamapp_gaps"}[5m]) > 0',  # by its name matcher
    ],
)
def test_a_series_no_worker_exports_is_caught(exported: set[str], expr: str) -> None:
    groups = rule_groups(COMPONENT / "rules.yaml")
    assert series_problems(groups, exported) == []
    assert series_problems(changed(groups, "StreamappRollback", set_expr(expr)), exported)


@pytest.mark.parametrize(
    "change",
    [
        drop_annotation("runbook_url"),
        drop_annotation("description"),
        lambda rule: rule["annotations"].__setitem__("runbook_url", f"{DEFAULTS.runbook_base}/rollbacks.md"),
        lambda rule: rule["labels"].__setitem__("severity", "page"),
    ],
    ids=["no runbook_url", "no description", "another runbook", "unknown severity"],
)
def test_an_alert_without_its_annotations_is_caught(tmp_path: Path, change: Callable[[Doc], object]) -> None:
    groups = rule_groups(COMPONENT / "rules.yaml")
    write_runbooks(tmp_path)  # every runbook there, so that only the change can fail
    assert annotation_problems(groups, tmp_path, DEFAULTS.runbook_base) == []
    assert annotation_problems(changed(groups, "StreamappRollback", change), tmp_path, DEFAULTS.runbook_base)


def test_a_missing_runbook_file_is_caught(tmp_path: Path) -> None:
    groups = rule_groups(COMPONENT / "rules.yaml")
    write_runbooks(tmp_path)
    assert annotation_problems(groups, tmp_path, DEFAULTS.runbook_base) == []
    (tmp_path / "snapshot-refused.md").unlink()
    assert annotation_problems(groups, tmp_path, DEFAULTS.runbook_base) == [
        f"StreamappSnapshotRefused: no runbook {tmp_path / 'snapshot-refused.md'}"
    ]


@pytest.mark.parametrize(
    "expr",
    [
        "sum by (job) (rate(streamapp_events_total[5m])",  # unbalanced
        "streamapp_gaps_total > > 10",
        "rate(streamapp_gaps_total) > 0",  # a range function on an instant vector
    ],
)
def test_a_broken_expression_fails_promtool_check(promtool: str, tmp_path: Path, expr: str) -> None:
    groups = rule_groups(COMPONENT / "rules.yaml")
    assert promtool_problems(promtool, "check", "rules", str(write_rules(tmp_path / "ok", groups))) == []
    broken = write_rules(tmp_path / "broken", changed(groups, "StreamappGapsRepeated", set_expr(expr)))
    assert promtool_problems(promtool, "check", "rules", str(broken))


@pytest.mark.parametrize(
    "setting",
    [
        "lag_events=40000",  # the lag case no longer fires
        "partition_unserved_for=1m",  # the short rebalance now fires
        "champion_floor=0.5",  # the low champion no longer fires
        "min_events_learned=500",  # the partition with too few labels now fires
    ],
)
def test_the_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path, setting: str) -> None:
    assert alerts.main(["--set", setting, "--out", str(tmp_path)]) == 0
    shutil.copy(COMPONENT / "tests.yaml", tmp_path / "tests.yaml")
    assert promtool_problems(promtool, "test", "rules", str(tmp_path / "tests.yaml"))


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["spec"]["groups"][0]["rules"][0].__setitem__("fore", "2m"),
        lambda doc: doc["spec"]["groups"][0]["rules"][0].__setitem__("for", "2 minutes"),
        lambda doc: doc["spec"]["groups"][0]["rules"][0].__setitem__("record", "streamapp:up"),
        lambda doc: doc["spec"]["groups"][0].pop("name"),
        lambda doc: doc["spec"].__setitem__("rules", []),
    ],
    ids=[
        "misspelt field",
        "not a duration",
        "alert and record",
        "group without name",
        "rules outside groups",
    ],
)
def test_a_prometheus_rule_off_the_crd_schema_is_caught(change: Callable[[Doc], object]) -> None:
    rule = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    assert custom_resource_problems(rule) == []
    change(rule)
    assert custom_resource_problems(rule)
