"""Draw the Grafana dashboard's JSON from a live Prometheus into a PNG: a preview, not a Grafana.

No Grafana server can run where the dashboard is made, so this draws its JSON with matplotlib for a
person to see what the panels show on real data, and which are empty or wrong. Rows and panels sit
at their gridPos on Grafana's 24-column grid; time series come from /api/v1/query_range, stat
panels' numbers from /api/v1/query in their threshold's colour. Nothing more of Grafana: no other
panel types, overrides, transformations or tooltips; a long legend is cut, not scrolled; UTC.

    .venv/bin/python tools/dashboard_preview.py --prometheus http://127.0.0.1:9090 --job streamapp \
        --out docs/grafana-dashboard.png --minutes 15 --scrape-interval 15
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

DASHBOARD = Path(__file__).resolve().parents[1] / "k8s/components/grafana/streamapp-dashboard.json"
COLUMN, ROW, GAP = 75, 30, 4  # pixels of a grid column, of a grid row (Grafana's 30), between panels
TITLE, LINE = 22, 13  # pixels of a panel's title bar and of one legend line
BACK, PANEL, EDGE, TEXT, DIM, RED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9a", "#F2495C"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0"]
NAMED = {"green": "#73BF69", "red": RED, "orange": "#FF9830", "yellow": "#FADE2A", "blue": "#5794F2"}
SECONDS = ((1e-3, 1e6, "µs"), (1, 1e3, "ms"), (60, 1, "s"), (3600, 1 / 60, "min"), (math.inf, 1 / 3600, "h"))
SMALL: dict[str, Any] = {"fontsize": 7}
Json = dict[str, Any]
Series = tuple[str, np.ndarray]  # legend, a value (or NaN: none) per step of the window


def fetch(url: str, params: dict[str, str]) -> list[Json] | str:
    """A Prometheus API call's result, or its error as text to draw in the panel instead."""
    try:
        with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 400/422: the query's own error, as JSON
        body = json.loads(exc.read() or b"{}")
    except OSError as exc:
        return str(exc)
    if body.get("status") != "success":
        return str(body.get("error", body))
    result: list[Json] = body["data"]["result"]
    return result


def fmt(value: float, unit: str) -> str:
    """A value as Grafana's unit would print it (roughly): SI or IEC prefixes, time units, %."""
    if math.isnan(value):
        return "NaN"
    if unit in ("percentunit", "percent"):
        return f"{num(value * 100 if unit == 'percentunit' else value)}%"
    if unit == "s":
        scale, name = next((s, n) for limit, s, n in SECONDS if abs(value) < limit)
        return f"{num(value * scale)} {name}" if value else "0 s"
    if unit == "bytes":  # IEC, as Grafana's
        power = min(4, int(math.log(abs(value), 1024))) if abs(value) >= 1 else 0
        return f"{num(value / 1024**power)} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[power]}"
    suffix = " ops/s" if unit == "ops" else ""
    for limit, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if unit != "none" else ():
        if abs(value) >= limit:
            return f"{num(value / limit)}{name}{suffix}"
    return f"{num(value)}{suffix}"


def num(value: float) -> str:
    """Three significant digits at most, no trailing zeros."""
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.1e}"


class BinaryLocator(MaxNLocator):
    """Ticks at round numbers of KiB, MiB or GiB, as Grafana's bytes axis, not of decimal bytes."""

    def tick_values(self, vmin: float, vmax: float) -> Any:
        scale = 1024 ** max(0, int(math.log(max(abs(vmin), abs(vmax), 1), 1024)))
        return super().tick_values(vmin / scale, vmax / scale) * scale


def substitute(expr: str, variables: dict[str, str]) -> str:
    """The query as Grafana sends it: $name and ${name} replaced (unknown ones left as they are)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), expr)


def legend(template: str, labels: dict[str, str]) -> str:
    """legendFormat with {{label}} filled in; without one, the labels as Grafana shows them."""
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def colour(value: float, panel: Json) -> str:
    """The colour of the highest threshold step the value reaches (the base step's below all)."""
    chosen = "blue"
    for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", []):
        if step.get("value") is None or value >= step["value"]:  # NaN reaches none
            chosen = step["color"]
    return NAMED.get(chosen, chosen)


class Renderer:
    """One figure for the whole dashboard; positions in Grafana's pixels from the top left."""

    def __init__(self, prometheus: str, variables: dict[str, str], start: float, end: float, step: float):
        self.api, self.variables = prometheus.rstrip("/") + "/api/v1/", variables
        self.start, self.end, self.step = start, end, step
        self.days = np.arange(start, end + step / 2, step) / 86400  # the steps, as matplotlib's dates

    def box(self, left: float, top: float, width: float, height: float) -> tuple[float, float, float, float]:
        """Pixels (from the top left) as figure fractions (left, bottom, width, height)."""
        w, h = self.width, self.height
        return (left / w, 1 - (top + height) / h, width / w, height / h)

    def text(self, x: float, y: float, words: str, **style: Any) -> None:
        style = {"color": TEXT, "fontsize": 8, "va": "center", **style}
        self.figure.text(x / self.width, 1 - y / self.height, words, **style)

    def draw(self, dashboard: Json, dpi: int) -> Figure:
        flat = [q for p in dashboard["panels"] for q in (p, *p.get("panels", []))]  # collapsed rows' too
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in flat)
        self.width, self.height = 24 * COLUMN, bottom * ROW + TITLE + GAP
        self.figure = plt.figure(figsize=(self.width / dpi, self.height / dpi), dpi=dpi, facecolor=BACK)
        when = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(self.start))} to "
        when += time.strftime("%H:%M UTC", time.gmtime(self.end))
        heading = f"{dashboard.get('title', '')}   job={self.variables['job']}   {when}"
        self.text(GAP, TITLE / 2, heading, fontsize=11, weight="bold")
        self.text(self.width - GAP, TITLE / 2, "tools/dashboard_preview.py, not Grafana", ha="right")
        for panel in flat:
            g = panel["gridPos"]
            x, y = g["x"] * COLUMN + GAP, g["y"] * ROW + TITLE + GAP
            w, h = g["w"] * COLUMN - 2 * GAP, g["h"] * ROW - 2 * GAP
            if panel["type"] == "row":
                self.text(x, y + h / 2, "▾ " + panel.get("title", ""), fontsize=11, weight="bold")
                continue
            x0, y0, fw, fh = self.box(x, y, w, h)
            frame = Rectangle((x0, y0), fw, fh, facecolor=PANEL, edgecolor=EDGE, linewidth=0.8, zorder=-1)
            self.figure.add_artist(frame)  # below the panel's axes
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            shown = {"ops": "ops/s", "percentunit": "%", "none": "", "short": ""}.get(unit, unit)
            self.text(x + 8, y + TITLE / 2 + 2, panel.get("title", ""), weight="bold")
            self.text(x + w - 8, y + TITLE / 2 + 2, shown, color=DIM, ha="right")
            inner = (x + 8, y + TITLE + 2, w - 16, h - TITLE - 6)
            if panel["type"] == "timeseries":
                self.timeseries(panel, unit, *inner)
            elif panel["type"] == "stat":
                self.stat(panel, unit, *inner)
            else:
                self.message(*inner, f"{panel['type']} panel: not drawn")
        return self.figure

    def series(self, panel: Json) -> list[Series] | str:
        """Every target's series over the window, or the first error."""
        found: list[Series] = []
        window = {"start": f"{self.start}", "end": f"{self.end}", "step": f"{self.step}"}
        for target in panel.get("targets", []):
            query = substitute(target.get("expr", ""), self.variables)
            result = fetch(self.api + "query_range", {"query": query} | window)
            if isinstance(result, str):
                return f"{target.get('refId')}: {result}"
            for item in result:  # missing steps stay NaN: the line breaks there, as in Grafana
                ys = np.full(len(self.days), np.nan)
                for t, v in item["values"]:
                    ys[round((float(t) - self.start) / self.step)] = float(v)
                found.append((legend(target.get("legendFormat", ""), item["metric"]), ys))
        return found

    def message(self, x: float, y: float, w: float, h: float, words: str, tint: str = DIM) -> None:
        self.text(x + w / 2, y + h / 2, words, color=tint, ha="center", fontsize=9, wrap=True)

    def timeseries(self, panel: Json, unit: str, x: float, y: float, w: float, h: float) -> None:
        found = self.series(panel)
        if isinstance(found, str) or not found:
            self.message(x, y, w, h, str(found or "No data"), RED if found else DIM)
            return
        lines = min(len(found), max(1, int(h * 0.4 / LINE) - 1))  # legend lines below the graph
        cut = lines < len(found)
        lines -= cut  # the last line then says how many more
        legend_h = (lines + 1 + cut) * LINE
        axes = self.figure.add_axes(self.box(x + 56, y + 4, w - 60, h - legend_h - 22), facecolor=PANEL)
        defaults = panel["fieldConfig"]["defaults"]
        fill = defaults.get("custom", {}).get("fillOpacity", 0) / 100
        for index, (_, ys) in enumerate(found):
            axes.plot(self.days, ys, color=PALETTE[index % len(PALETTE)], linewidth=1.1)
            axes.fill_between(self.days, ys, color=PALETTE[index % len(PALETTE)], alpha=fill, linewidth=0)
        axes.set_xlim(self.start / 86400, self.end / 86400)
        if "min" in defaults:
            axes.set_ylim(bottom=defaults["min"])
        if not np.nan_to_num(np.array([ys for _, ys in found])).any():
            axes.set_ylim(defaults.get("min", -1), 1)  # all zero: a scale as Grafana's, not ±0.05
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        least = (self.end - self.start) / 60 / max(1, w // 80)  # minutes between ticks, ~80 px apart
        every = next((m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720) if m >= least), 1440)
        hourly = mdates.HourLocator(interval=every // 60) if every >= 60 else None  # or round minutes:
        axes.xaxis.set_major_locator(hourly or mdates.MinuteLocator(byminute=range(0, 60, every)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, unit)))
        axes.yaxis.set_major_locator(BinaryLocator(4) if unit == "bytes" else MaxNLocator(4))
        axes.tick_params(colors=DIM, labelsize=6.5, length=0, pad=3)
        axes.grid(color=EDGE, linewidth=0.6)
        for spine in axes.spines.values():
            spine.set_visible(False)
        top, room = y + h - legend_h + 2, int((w - 150) / 4.6)  # the legend: name, last, max
        self.text(x + w - 70, top, "Last *", color=DIM, ha="right", **SMALL)
        self.text(x + w - 4, top, "Max", color=DIM, ha="right", **SMALL)
        for row, (name, ys) in enumerate(found[:lines], start=1):
            real = ys[~np.isnan(ys)]
            last, peak = (fmt(real[-1], unit), fmt(real.max(), unit)) if real.size else ("NaN", "NaN")
            at = top + row * LINE
            self.text(x + 2, at, "━", color=PALETTE[(row - 1) % len(PALETTE)], **SMALL)
            self.text(x + 14, at, name if len(name) <= room else name[: room - 1] + "…", **SMALL)
            self.text(x + w - 70, at, last, ha="right", **SMALL)
            self.text(x + w - 4, at, peak, ha="right", **SMALL)
        if cut:
            more = f"… {len(found) - lines} more series (Grafana scrolls)"
            self.text(x + 14, top + (lines + 1) * LINE, more, color=DIM, **SMALL)

    def stat(self, panel: Json, unit: str, x: float, y: float, w: float, h: float) -> None:
        """The value now (lastNotNull) in its threshold's colour, over a faint sparkline of the window."""
        values: list[float] = []
        for target in panel.get("targets", []):
            query = substitute(target.get("expr", ""), self.variables)
            result = fetch(self.api + "query", {"query": query, "time": f"{self.end}"})
            if isinstance(result, str):
                self.message(x, y, w, h, f"{target.get('refId')}: {result}", RED)
                return
            values += [float(item["value"][1]) for item in result]
        if not values:
            self.message(x, y, w, h, "No data")
            return
        found = self.series(panel)
        tint = colour(values[0], panel)
        if isinstance(found, list) and found and panel.get("options", {}).get("graphMode") == "area":
            axes = self.figure.add_axes(self.box(x - 8, y + h * 0.62, w + 16, h * 0.38 + 4))
            axes.set_axis_off()
            ys = found[0][1]
            floor = np.nanmin(ys) if np.isfinite(ys).any() else 0
            axes.fill_between(self.days, ys, floor, color=tint, alpha=0.18, linewidth=0)
            axes.plot(self.days, ys, color=tint, alpha=0.6, linewidth=0.9)
            axes.set_xlim(self.start / 86400, self.end / 86400)
        shown = "  ".join(fmt(value, unit) for value in values[:3])  # Grafana: one per series
        size = 22 if len(values) == 1 else 14
        self.text(x + w / 2, y + h * 0.42, shown, ha="center", fontsize=size, weight="bold", color=tint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--job", required=True, help="the workers' scrape job ($job)")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    parser.add_argument("--minutes", type=float, default=30, help="the time range")
    parser.add_argument("--end", type=float, help="when the range ends, seconds since the epoch (now)")
    parser.add_argument("--metric", default="rocauc", help="the model panels' metric ($metric)")
    parser.add_argument("--scrape-interval", type=float, help="seconds; $__rate_interval is 4x (1m without)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--dpi", type=int, default=100, help="100: one Grafana pixel per pixel")
    args = parser.parse_args(argv)
    end = args.end or time.time()
    window = args.minutes * 60
    step = float(max(int(window / 400), args.scrape_interval or 15))  # ~a point a pixel, or a scrape
    variables = {
        "job": args.job,
        "partition": ".*",  # "All": the variable's allValue
        "metric": args.metric,
        "__rate_interval": f"{int(4 * args.scrape_interval)}s" if args.scrape_interval else "1m",
        "__range": f"{int(window)}s",
        "__interval": f"{step:g}s",
    }
    renderer = Renderer(args.prometheus, variables, end - window, end, step)
    figure = renderer.draw(json.loads(args.dashboard.read_text()), args.dpi)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, facecolor=BACK)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
