"""Soak: one worker holds a steady rate for a long time; its RSS is sampled beside the size of
its models, so that model growth (a Hoeffding tree grows with what it learns) can be told apart
from a leak.

    python -m bench.soak --minutes 20 --rate 13000     (the broker up: make kafka-up)

Writes bench/SOAK.md and bench/soak.png; `python -m bench.run --soak 20m` runs it after the
benchmark at 70% of the measured maximum.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench import measure, plots
from streamapp.settings import Settings
from tests.integration.cluster import ROOT, Worker, end_offsets, unique_env

PARTITIONS = 8
OUT = Path(__file__).resolve().parent


class Sample(NamedTuple):
    seconds: float  # since the feeder started
    rss_mb: float  # the worker's resident memory
    models_mb: float  # River's own estimate of its models' size, all partitions
    waiting_mb: float  # events waiting for their label (their JSON bytes), all partitions
    lag: int  # events produced and not yet applied


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def models_mb(worker: Worker, served: dict[int, dict[str, Any]]) -> float:
    """The sum of River's own estimate of each served model's memory (/models/{p})."""
    total = 0
    for partition in served:
        detail = worker.get(f"/models/{partition}") or {}
        total += detail.get("memory_bytes") or 0
    return total / 2**20


def sample(worker: Worker, topic: str, seconds: float) -> Sample:
    assert worker.proc is not None
    served = worker.models()
    ends = end_offsets(topic, PARTITIONS)
    lag = sum(end - 1 - served.get(p, {}).get("offset_applied", -1) for p, end in ends.items())
    waiting = sum(state.get("pending_bytes", 0) for state in served.values()) / 2**20
    return Sample(seconds, current_rss_mb(worker.proc.pid), models_mb(worker, served), waiting, lag)


def soak(model: str, rate: float, seconds: float) -> list[Sample]:
    """Sample every 10 s while one worker takes `rate` events/s for `seconds`."""
    env = unique_env(PARTITIONS, model=model)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(env, Path(tmp) / "w1").start()
        feeder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamapp",
                "produce",
                "--rate",
                str(rate),
                "--limit",
                str(int(rate * seconds)),
                "--quiet",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
        )
        start = time.monotonic()
        topic = Settings.from_env(env).events_topic
        try:
            while feeder.poll() is None:
                now = sample(worker, topic, time.monotonic() - start)
                samples.append(now)
                print(
                    f"  soak {now.seconds:6.0f} s: worker RSS {now.rss_mb:.0f} MB, "
                    f"models {now.models_mb:.1f} MB, waiting {now.waiting_mb:.1f} MB, lag {now.lag:,}",
                    flush=True,
                )
                time.sleep(10)
        finally:
            feeder.kill()
            worker.stop()
    return samples


def report(samples: list[Sample], model: str, rate: float) -> list[str]:
    """The soak's section of a results file (the plot goes to bench/soak.png). Growth is read
    over the second half: the first fills RocksDB's memtables (8 MiB per partition) and caches."""
    plots.soak(samples, OUT / "soak.png")
    with open(OUT / "soak.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(Sample._fields)
        writer.writerows(samples)
    end = samples[-1]
    half = next(s for s in samples if s[0] >= end[0] / 2)
    return [
        f"## Soak (one worker, {model}, {rate:,.0f} events/s, {end[0] / 60:.0f} min)",
        "",
        f"Worker RSS {samples[0][1]:.0f} MB at start, {half[1]:.0f} MB after {half[0] / 60:.0f} min, "
        f"{end[1]:.0f} MB at the end ({end[1] - half[1]:+.0f} MB over the second half). The models' "
        f"own size (River's estimate, all partitions): {half[2]:.1f} MB, then {end[2]:.1f} MB. Events "
        f"waiting for their label: {half[3]:.1f} MB, then {end[3]:.1f} MB. Lag: at most "
        f"{max(s.lag for s in samples):,} events, {end[4]:,} at the end. Every sample: bench/soak.csv.",
        "",
        "![soak](soak.png)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rate", type=float, default=13_000, help="events/s (70%% of the HT maximum here)")
    parser.add_argument("--model", default="hoeffding_tree")
    args = parser.parse_args()
    samples = soak(args.model, args.rate, args.minutes * 60)
    lines = report(samples, args.model, args.rate)
    header = (
        f"Python {platform.python_version()}, {os.cpu_count()} cores ({measure.cpu_model()}); "
        f"`python -m bench.soak --minutes {args.minutes:g} --rate {args.rate:g} --model {args.model}`, "
        f"synthetic card transactions, {PARTITIONS} partitions, the broker on the same machine"
    )
    (OUT / "SOAK.md").write_text("\n".join(["# Soak", "", header, "", *lines]) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
