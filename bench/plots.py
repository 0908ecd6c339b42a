"""The benchmark's figures as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: one colour per implementation, in bench.run.IMPLEMENTATIONS' order
COLOURS = ["#888888", "#4c72b0", "#55a868", "#dd8452", "#c44e52", "#f2b880", "#e8a0a2"]


def throughput(results: dict[str, Any], names: list[str], path: Path) -> None:
    """Grouped bars per model, for the implementations it ran (the first, the limit, always):
    the median over the rounds with their range, labelled with its ratio to the limit."""
    models = list(results)
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        runs = results[model].throughput
        ran = [n for n in names if n in runs]
        values = [results[model].medians[n] for n in ran]
        colours = [COLOURS[names.index(n) % len(COLOURS)] for n in ran]
        errors = [
            [v - min(runs[n]) for n, v in zip(ran, values, strict=True)],
            [max(runs[n]) - v for n, v in zip(ran, values, strict=True)],
        ]
        bars = ax.bar(range(len(ran)), values, color=colours, yerr=errors, capsize=3)
        limit = values[0]
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{value / limit:.2f}x",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        labels = [n.replace(" ", "\n", 1).replace(", ", "\n") for n in ran]
        ax.set_xticks(range(len(ran)), labels, fontsize=7)
        ax.set_title(model, fontsize=10)
        ax.set_ylabel("events/s")
    fig.suptitle("Throughput (ratio to River's own loop in memory)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(results: dict[str, Any], path: Path) -> None:
    """p50 / p99 / max end-to-end latency per model and load (bench.run.Latency)."""
    labels, p50, p99, peak = [], [], [], []
    for model, result in results.items():
        for run in result.latency:
            load = run.label.replace(" of its maximum", " of its max").replace(", ", "\n")
            labels.append(f"{model}\n{load}")
            p50.append(run.timings.percentile(0.5) * 1000)
            p99.append(run.timings.percentile(0.99) * 1000)
            peak.append(max(run.timings.latencies) * 1000)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 4))
    width = 0.27
    xs = range(len(labels))
    ax.bar([x - width for x in xs], p50, width, label="p50")
    ax.bar(list(xs), p99, width, label="p99")
    ax.bar([x + width for x in xs], peak, width, label="max")
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.legend()
    ax.set_title(
        "End-to-end latency, one worker, at 50% and 80% of its maximum\n"
        "(exactly once: until visible to read_committed consumers)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak(samples: Sequence[Sequence[float]], path: Path) -> None:
    """Samples of (seconds, RSS, models, waiting events in MB, lag in events), as bench/soak.py
    takes them; the lag below, on the same time axis (memory moves when the worker falls behind)."""
    fig, (ax, lag) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, height_ratios=(3, 1))
    minutes = [s[0] / 60 for s in samples]
    ax.plot(minutes, [s[1] for s in samples], label="worker RSS")
    ax.plot(minutes, [s[2] for s in samples], label="models (River's estimate)")
    ax.plot(minutes, [s[3] for s in samples], label="events waiting for their label")
    ax.legend()
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak at 70% of the maximum rate")
    lag.plot(minutes, [s[4] / 1000 for s in samples], color="grey")
    lag.set_ylabel("lag (k events)")
    lag.set_xlabel("minutes")
    lag.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
