"""Soak: one worker holds a steady rate for a long time; its RSS is sampled beside the size of
its models, so that model growth (a Hoeffding tree grows with what it learns) can be told apart
from a leak.

    python -m bench.soak --minutes 20 --rate 13000     (the broker up: make kafka-up)

Writes bench/SOAK.md and bench/soak.png; `python -m bench.run --soak 20m` runs it after the
benchmark at 70% of the measured maximum.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import plots
from tests.integration.cluster import ROOT, Worker, unique_env

PARTITIONS = 8
OUT = Path(__file__).resolve().parent

#: (seconds since start, worker RSS in MB, the models' own size in MB)
Sample = tuple[float, float, float]


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def models_mb(worker: Worker) -> float:
    """The sum of River's own estimate of each served model's memory (/models/{p})."""
    total = 0
    for partition in worker.models():
        detail = worker.get(f"/models/{partition}") or {}
        total += detail.get("memory_bytes") or 0
    return total / 2**20


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
        try:
            while feeder.poll() is None:
                assert worker.proc is not None
                sample = (time.monotonic() - start, current_rss_mb(worker.proc.pid), models_mb(worker))
                samples.append(sample)
                print(
                    f"  soak {sample[0]:6.0f} s: worker RSS {sample[1]:.0f} MB, models {sample[2]:.1f} MB",
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
    end = samples[-1]
    half = next(s for s in samples if s[0] >= end[0] / 2)
    return [
        f"## Soak (one worker, {model}, {rate:,.0f} events/s, {end[0] / 60:.0f} min)",
        "",
        f"Worker RSS {samples[0][1]:.0f} MB at start, {half[1]:.0f} MB after {half[0] / 60:.0f} min, "
        f"{end[1]:.0f} MB at the end ({end[1] - half[1]:+.0f} MB over the second half). The models' "
        f"own size (River's estimate, all partitions): {half[2]:.1f} MB, then {end[2]:.1f} MB.",
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
    header = f"Python {platform.python_version()}, {os.cpu_count()} cores; `python -m bench.soak`"
    (OUT / "SOAK.md").write_text("\n".join(["# Soak", "", header, "", *lines]) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
