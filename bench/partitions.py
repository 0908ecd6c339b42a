"""Hundreds of partitions per worker: memory, readiness, hand-over and throughput.

    python -m bench.partitions [--counts 8,64,256] [--events 40000] [--model hoeffding_tree]

For each partition count, on fresh topics: one worker starts (time until it serves every
partition), learns the card events at full speed (throughput, resident memory after); a second
worker joins (time until it serves half the partitions: the hand-over, snapshots read back
from the changelog); both learn as many events again (throughput of two); the second is killed
and started again (time until every partition is served again: recovery). Memory is each
worker's resident set (VmRSS) and its peak (VmHWM), read from /proc.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import measure
from bench.run import feed
from streamapp.settings import Settings
from tests.integration.cluster import Worker, unique_env, wait_for


@dataclass
class Row:
    partitions: int
    ready_s: float = 0.0  # one worker, from its launch until it serves every partition
    one_worker: float = 0.0  # events/s
    rss_mb: float = 0.0  # one worker after learning, resident
    peak_mb: float = 0.0
    handover_s: float = 0.0  # a second worker, from its launch until it serves half
    two_workers: float = 0.0
    rss_two_mb: float = 0.0  # the larger of the two, after learning
    recovery_s: float = 0.0  # the second killed and launched again, until all are served


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serving(*workers: Worker) -> int:
    """Partitions served, over the workers."""
    return sum(len(worker.models()) for worker in workers if worker.alive())


def measure_count(count: int, events: int, model: str, root: Path) -> Row:
    row = Row(count)
    env = unique_env(count, model=model)
    settings = Settings.from_env(env)
    measure.stamp_on_arrival(settings.predictions_topic)
    first = Worker(env, root / "w1")
    started = time.monotonic()
    first.launch().ready()
    wait_for("every partition served", lambda: serving(first) == count, 300)
    row.ready_s = time.monotonic() - started
    feed(env, events)
    measure.wait_for_count(settings.predictions_topic, count, events, events / 100 + 300)
    row.one_worker = measure.timings(settings.predictions_topic, settings.events_topic, count).throughput
    assert first.proc is not None
    row.rss_mb, row.peak_mb = rss_mb(first.proc.pid), measure.peak_rss_mb(first.proc.pid)
    print(
        f"  {count} partitions, 1 worker: ready in {row.ready_s:.1f} s, {row.one_worker:,.0f} events/s, "
        f"{row.rss_mb:.0f} MB (peak {row.peak_mb:.0f})",
        flush=True,
    )

    second = Worker(env, root / "w2")
    started = time.monotonic()
    second.launch()
    wait_for("half the partitions on the second worker", lambda: len(second.models()) >= count // 2, 300)
    wait_for("every partition served", lambda: serving(first, second) == count, 300)
    row.handover_s = time.monotonic() - started
    time.sleep(2)
    mark = time.time()
    feed(env, events)
    measure.wait_for_count(settings.predictions_topic, count, 2 * events, events / 100 + 300)
    timings = measure.timings(settings.predictions_topic, settings.events_topic, count, since=mark)
    row.two_workers = timings.throughput
    assert second.proc is not None
    row.rss_two_mb = max(rss_mb(first.proc.pid), rss_mb(second.proc.pid))
    print(
        f"  {count} partitions, 2 workers: half handed over in {row.handover_s:.1f} s, "
        f"{row.two_workers:,.0f} events/s, {row.rss_two_mb:.0f} MB",
        flush=True,
    )

    second.stop(signal.SIGKILL)
    started = time.monotonic()
    second.launch()
    wait_for("every partition served after the kill", lambda: len(second.models()) >= count // 2, 300)
    wait_for("every partition served", lambda: serving(first, second) == count, 300)
    row.recovery_s = time.monotonic() - started
    print(f"  {count} partitions: the killed worker serves again in {row.recovery_s:.1f} s", flush=True)
    first.stop()
    second.stop()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="8,64,256")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--model", default="hoeffding_tree")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(c) for c in args.counts.split(",")):
            rows.append(measure_count(count, args.events, args.model, Path(tmp) / str(count)))
    print(f"\n{args.model}, {args.events:,} card events per phase")
    print(
        "| partitions | ready, 1 worker | events/s, 1 worker | RSS (peak), 1 worker | half handed over "
        "| events/s, 2 workers | RSS, larger of 2 | served again after a SIGKILL |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.partitions} | {r.ready_s:.1f} s | {r.one_worker:,.0f} "
            f"| {r.rss_mb:.0f} MB ({r.peak_mb:.0f}) "
            f"| {r.handover_s:.1f} s | {r.two_workers:,.0f} | {r.rss_two_mb:.0f} MB "
            f"| {r.recovery_s:.1f} s |"
        )


if __name__ == "__main__":
    main()
