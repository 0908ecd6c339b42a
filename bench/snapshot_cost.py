"""Snapshot cost as a share of learning time, per model, at a snapshot interval.

    .venv/bin/python -m bench.snapshot_cost --events 40000 --every 5000

Runs the partition states of 8 partitions over keyed events in memory (no Kafka), once without
snapshots and once encoding a snapshot every N events of a partition, as the worker does, and
reports the share of the time the snapshots cost and their sizes.
"""

from __future__ import annotations

import argparse
import time

from streamapp import datasets, models, producer, records, snapshot
from streamapp.partition import PartitionConfig, PartitionState
from streamapp.records import Event
from streamapp.settings import Secret
from streamapp.signing import Signer

PARTITIONS = 8
SIGNER = Signer(Secret("bench-signing-key-0123456789abcdefghij"))  # the HMAC is part of the cost


def run(model: str, events: list[bytes], every: int | None) -> tuple[float, float, list[int]]:
    """(total seconds, seconds in snapshots, snapshot sizes)."""
    spec = models.resolve(model)
    states = [PartitionState(p, spec, PartitionConfig(pending_max=0)) for p in range(PARTITIONS)]
    in_snapshots = 0.0
    sizes: list[int] = []
    start = time.perf_counter()
    for offset, value in enumerate(events):
        decoded = records.parse(value, records.Limits(max_event_bytes=1 << 20))
        assert isinstance(decoded, Event)
        state = states[offset % PARTITIONS]
        state.apply(offset // PARTITIONS, decoded)
        if every and state.runtime.events_since_snapshot >= every:
            t0 = time.perf_counter()
            blob = snapshot.encode(state, 1 << 30, SIGNER)
            in_snapshots += time.perf_counter() - t0
            state.runtime.snapshot_taken(state.offset, len(blob), time.time())
            sizes.append(len(blob))
    return time.perf_counter() - start, in_snapshots, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--every", type=int, default=5000)
    parser.add_argument("--models", default="hoeffding_tree,adaptive_random_forest")
    args = parser.parse_args()
    events = [v for _, v in producer.messages(datasets.load("card", limit=args.events))]
    print(f"{args.events} card events over {PARTITIONS} partitions, a snapshot every {args.every} events")
    print("| model | events/s without | events/s with | snapshot share | snapshots | mean size | max size |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        bare, _, _ = run(model, events, None)
        total, spent, sizes = run(model, events, args.every)
        mean_mb = sum(sizes) / max(len(sizes), 1) / 1e6
        print(
            f"| {model} | {args.events / bare:,.0f} | {args.events / total:,.0f} | {spent / total:.2%} "
            f"| {len(sizes)} | {mean_mb:.2f} MB | {max(sizes, default=0) / 1e6:.2f} MB |"
        )


if __name__ == "__main__":
    main()
