"""The Grafana dashboard (k8s/components/grafana/), checked offline: no Grafana, no Prometheus.

The committed JSON is what tools/grafana_dashboard.py generates; every query, with the dashboard's
variables replaced by values they can take, parses as PromQL and selects only series a worker's
/metrics exports (tests/exposition.py), so that a renamed metric fails here instead of leaving an
empty panel; every panel has the template data source, a unit, a title and a description, and no
two overlap; kustomize renders the component into the ConfigMap the Grafana sidecar loads. The
mutation tests break each check on purpose.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.test_k8s import Docs, by_name, copy_tree, render, write_overlay
from tests.exposition import series_names, unknown_series, worker_exposition

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "k8s" / "components" / "grafana"
DASHBOARD = COMPONENT / "streamapp-dashboard.json"
CONFIGMAP = "streamapp-grafana-dashboard"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# A value each variable can take, as Grafana puts it into a query: the dashboard's own (a
# multi-value partition becomes a regex alternation) and the built-ins the queries may use.
EXAMPLES = {"datasource": "prometheus", "job": "streamapp", "partition": "(0|3)", "metric": "rocauc"}
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "3h"}
# kubectl apply (client-side) keeps the whole object in an annotation of at most 256 KiB.
MAX_BYTES = 256 * 1024

Dashboard = dict[str, Any]


def generator() -> ModuleType:
    """tools/grafana_dashboard.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboard", ROOT / "tools" / "grafana_dashboard.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> Dashboard:
    loaded: Dashboard = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return series_names(worker_exposition())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Docs:
    """The base with the grafana component, from a copy of k8s/."""
    tree = copy_tree(tmp_path_factory.mktemp("manifests"))
    return render(write_overlay(tree, "grafana", ["grafana"]))


# ------------------------------------------------------------------------------------- helpers


def panels(dashboard: Dashboard) -> Iterator[Dashboard]:
    """Every panel but the rows, including those inside a collapsed row."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: Dashboard) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and of the selector in each label_values() variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{panel['title']} {target.get('refId')}", target.get("expr", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
            yield f"variable {variable['name']}", found[1] if found else variable["query"]


def concrete(expr: str, variables: dict[str, str]) -> str:
    """The query Grafana sends: each $name and ${name} replaced by a value of that variable (a
    KeyError for a variable the dashboard does not define)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m[1] or m[2]], expr)


# -------------------------------------------------------------------------------------- checks


def query_problems(dashboard: Dashboard, exported: set[str]) -> list[str]:
    """Every query parses once its variables are filled in and selects only exported series."""
    variables = BUILTINS | {v["name"]: EXAMPLES[v["name"]] for v in dashboard["templating"]["list"]}
    problems = []
    for where, expr in expressions(dashboard):
        try:
            unknown = unknown_series(concrete(expr, variables), exported)
        except KeyError as exc:
            problems.append(f"{where}: ${exc.args[0]} is no variable of the dashboard")
        except ValueError as exc:  # promql_parser's syntax errors, or a name pattern
            problems.append(f"{where}: {expr!r}: {exc}")
        else:
            problems += [f"{where}: {name} is not exported by a worker" for name in sorted(unknown)]
    return problems


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def structure_problems(dashboard: Dashboard) -> list[str]:
    """Panels that would mislead or hide: the wrong data source, no unit, title or description,
    off the 24-column grid, on top of each other."""
    problems = []
    for panel in panels(dashboard):
        name = panel.get("title") or f"panel {panel.get('id')}"
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        if not panel.get("description"):
            problems.append(f"{name}: no description of what a bad value means")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{name}: no unit")
        if not panel.get("targets"):
            problems.append(f"{name}: no query")
        sources = [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]
        if any(source != DATASOURCE for source in sources):
            problems.append(f"{name}: a data source other than the $datasource variable")
    placed = [(p.get("title") or f"panel {p.get('id')}", p["gridPos"]) for p in dashboard["panels"]]
    for i, (name, grid) in enumerate(placed):
        if grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: off the 24-column grid")
        problems += [f"{name} overlaps {other}" for other, pos in placed[i + 1 :] if overlaps(grid, pos)]
    ids = [p["id"] for p in dashboard["panels"]]
    ids += [p["id"] for row in dashboard["panels"] for p in row.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append("two panels share an id")  # Grafana then edits or links the wrong one
    return problems


def configmap_problems(docs: Docs, text: str) -> list[str]:
    """The sidecar's ConfigMap: its stable name, its label, the dashboard's JSON as it is."""
    found = by_name(docs, "ConfigMap", CONFIGMAP)
    if found is None:
        return [f"no ConfigMap {CONFIGMAP} (a name suffix would hide it from updates)"]
    problems = []
    if found["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        problems.append(f'{CONFIGMAP}: no label grafana_dashboard: "1", the sidecar ignores it')
    if found.get("data") != {DASHBOARD.name: text}:
        problems.append(f"{CONFIGMAP}: its data is not {DASHBOARD.name} as committed")
    if len(json.dumps(found)) > MAX_BYTES:
        problems.append(f"{CONFIGMAP}: over {MAX_BYTES} bytes, too big for `kubectl apply`")
    return problems


# --------------------------------------------------------------------------------------- tests


def test_the_committed_dashboard_is_the_generators_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = generator()
    assert tool.render() == DASHBOARD.read_text(), f"regenerate it: {tool.COMMAND}"
    assert tool.main(["--check"]) == 0
    edited = tmp_path / DASHBOARD.name
    edited.write_text(DASHBOARD.read_text().replace('"streamapp"', '"edited by hand"', 1))
    monkeypatch.setattr(tool, "TARGET", edited)
    assert tool.main(["--check"]) == 1


def test_every_query_selects_exported_series(dashboard: Dashboard, exported: set[str]) -> None:
    assert query_problems(dashboard, exported) == []
    assert sum(1 for _ in expressions(dashboard)) > 40


def test_the_structure(dashboard: Dashboard) -> None:
    assert structure_problems(dashboard) == []
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "partition", "metric"]
    assert not variables["metric"]["multi"], "one metric at a time: log loss falls as ROCAUC rises"
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["partition"]["multi"] and variables["partition"]["includeAll"]
    assert dashboard["uid"] == generator().UID


def test_the_configmap_carries_the_dashboard(rendered: Docs) -> None:
    assert configmap_problems(rendered, DASHBOARD.read_text()) == []


# ------------------------------------------------------------------------------------ mutations


def target(index: int, expr: str) -> Callable[[Dashboard], None]:
    """Replace the first query of the index-th panel (rows not counted)."""

    def change(dashboard: Dashboard) -> None:
        list(panels(dashboard))[index]["targets"][0]["expr"] = expr

    return change


def panel_field(index: int, path: str, value: Any) -> Callable[[Dashboard], None]:
    """Set a dotted path (list indices as numbers) of the index-th panel (rows not counted)."""

    def change(dashboard: Dashboard) -> None:
        node = list(panels(dashboard))[index]
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


def stacked(dashboard: Dashboard) -> None:
    """The second panel moved onto the first."""
    first, second = list(panels(dashboard))[:2]
    second["gridPos"] = dict(first["gridPos"])


QUERY_MUTATIONS = [
    ("unknown metric", target(0, 'sum(rate(streamapp_event_total{job="$job"}[$__rate_interval]))')),
    ("unknown bucket", target(5, "histogram_quantile(0.99, sum by (le) (rate(streamapp_e2e_bucket[5m])))")),
    ("syntax error", target(3, 'sum(rate(streamapp_events_total{job="$job"}[$__rate_interval])')),
    ("undefined variable", target(1, 'sum(up{job="$cluster"})')),
    ("name pattern", target(2, '{__name__=~"streamapp_.*"}')),
]

STRUCTURE_MUTATIONS = [
    ("no unit", panel_field(4, "fieldConfig.defaults.unit", "")),
    ("no title", panel_field(7, "title", "")),
    ("no description", panel_field(8, "description", "")),
    ("fixed data source", panel_field(9, "datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"})),
    ("target data source", panel_field(2, "targets.0.datasource", {"type": "loki", "uid": "${datasource}"})),
    ("no query", panel_field(10, "targets", [])),
    ("off the grid", panel_field(11, "gridPos.x", 20)),
    ("overlap", stacked),
    ("same id", panel_field(12, "id", 2)),
]


@pytest.mark.parametrize("change", [m[1] for m in QUERY_MUTATIONS], ids=[m[0] for m in QUERY_MUTATIONS])
def test_a_broken_query_is_caught(
    dashboard: Dashboard, exported: set[str], change: Callable[[Dashboard], None]
) -> None:
    broken = copy.deepcopy(dashboard)
    change(broken)
    assert len(query_problems(broken, exported)) == 1


@pytest.mark.parametrize(
    "change", [m[1] for m in STRUCTURE_MUTATIONS], ids=[m[0] for m in STRUCTURE_MUTATIONS]
)
def test_a_broken_panel_is_caught(dashboard: Dashboard, change: Callable[[Dashboard], None]) -> None:
    broken = copy.deepcopy(dashboard)
    change(broken)
    assert structure_problems(broken)


def test_a_broken_configmap_is_caught(rendered: Docs) -> None:
    text = DASHBOARD.read_text()

    def problems(change: Callable[[Dashboard], object], expected: str = text) -> str:
        docs = copy.deepcopy(rendered)
        change(next(d for d in docs if d["metadata"]["name"] == CONFIGMAP))
        return " ".join(configmap_problems(docs, expected))

    assert "no label" in problems(lambda cm: cm["metadata"]["labels"].clear())
    assert "no ConfigMap" in problems(lambda cm: cm["metadata"].update(name=f"{CONFIGMAP}-5f8b7c9d2k"))
    assert "as committed" in problems(lambda cm: None, text.replace("streamapp-oncall", "other"))
    big = text + " " * MAX_BYTES
    assert "too big" in problems(lambda cm: cm.update(data={DASHBOARD.name: big}), big)
