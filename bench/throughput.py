"""Single-worker throughput on a preloaded topic, against the bare River loop on the same events.

    .venv/bin/python -m bench.throughput --events 100000 --model hoeffding_tree

Produces the events first (keyed card transactions, 8 partitions), then starts one worker and
times it from its first applied event to its last, by polling /models. The bare loop runs the
same per-partition predict/learn/metric work in memory with no Kafka: the physical limit.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

from streamapp import datasets, models, producer, records
from streamapp.records import Event
from streamapp.settings import Settings
from streamapp.state import PartitionState
from tests.integration.cluster import running, unique_env, wait_for


def bare_loop(dataset: str, events: int, model: str, partitions: int) -> float:
    """events/s of PartitionState alone: decode, predict, metrics, learn; no Kafka, no Faust."""
    spec = models.resolve(model)
    states = [PartitionState(p, spec, pending_max=0) for p in range(partitions)]
    msgs = [value for _, value in producer.messages(datasets.load(dataset, limit=events))]
    start = time.perf_counter()
    for offset, value in enumerate(msgs):
        decoded = records.decode(value, 1 << 20)
        assert isinstance(decoded, Event)
        states[offset % partitions].apply_event(decoded, offset)
    return events / (time.perf_counter() - start)


def worker_throughput(dataset: str, events: int, model: str, partitions: int) -> float:
    env = unique_env(partitions, model=model)
    settings = Settings.from_env(env)
    asyncio.run(producer.produce(settings, dataset, rate=0, limit=events, progress=True))
    with tempfile.TemporaryDirectory() as tmp, running(env, Path(tmp) / "w1") as worker:
        first: list[tuple[float, int]] = []

        def seen() -> int:
            count = sum(p["events_seen"] for p in worker.models().values())
            if count and not first:
                first.append((time.perf_counter(), count))
            return count

        wait_for("the first event", lambda: seen() > 0, 120, worker.log_tail)
        wait_for(f"{events} events", lambda: seen() >= events, 3600, worker.log_tail)
        end = time.perf_counter()
    start, counted = first[0]
    return (events - counted) / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--model", default="hoeffding_tree")
    parser.add_argument("--dataset", default="card")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    limit = bare_loop(args.dataset, args.events, args.model, args.partitions)
    worker = worker_throughput(args.dataset, args.events, args.model, args.partitions)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"{args.events} {args.dataset} events, {args.model}, {args.partitions} partitions")
    print(f"bare River loop : {limit:9.0f} events/s")
    print(f"1 worker        : {worker:9.0f} events/s  ({worker / limit:.2f} x the bare loop)")


if __name__ == "__main__":
    main()
