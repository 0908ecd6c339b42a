"""What snapshots cost the worker's per-event path: none, made on the loop, made in a child.

    .venv/bin/python -m bench.snapshot_cost --events 40000 --every 1000 --runs 3

Runs the worker's Processor (records read, scored, learned, predictions encoded; the outputs
dropped) over card events in fetched batches of 100 records of one partition, 8 partitions,
yielding to the event loop between batches as a worker does. Once without snapshots, once with
STREAMAPP_SNAPSHOT_IN=loop and once with =child, each at a snapshot every N events of a
partition; the modes alternate run by run (a noisy minute hits all of them) and each figure is
the median of the runs. A mode's cost: its time over the time without snapshots in the same
round, less 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import time
import zlib
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import datasets, producer
from streamapp.outbox import Outbox
from streamapp.processor import Outputs, Processor
from streamapp.settings import Settings
from streamapp.snapshot_store import MemoryTable

PARTITIONS = 8
BATCH = 100
TOPIC = "events"
MODES = ("none", "loop", "child")


class NoOutbox:
    async def add(self, key: bytes | None, value: bytes) -> None:
        return None

    async def send(self) -> None:
        return None


async def nothing(*args: object) -> None:
    return None


def batches(events: int) -> list[tuple[TP, list[ConsumerRecord]]]:
    """Keyed card events split over the partitions by key, as fetches of BATCH records each."""
    by_partition: dict[int, list[ConsumerRecord]] = {p: [] for p in range(PARTITIONS)}
    now = int(time.time() * 1000)
    for key, value in producer.messages(datasets.load("card", limit=events)):
        partition = zlib.crc32(key or b"") % PARTITIONS
        records = by_partition[partition]
        records.append(ConsumerRecord(TOPIC, partition, len(records), now, 0, key, value, None, 0, 0, ()))
    fetched = [
        (TP(TOPIC, p), records[i : i + BATCH])
        for p, records in by_partition.items()
        for i in range(0, len(records), BATCH)
    ]
    fetched.sort(key=lambda f: (f[1][0].offset, f[0].partition))  # the partitions take turns
    return fetched


async def run(
    model: str, fetched: Sequence[tuple[TP, list[ConsumerRecord]]], mode: str, every: int
) -> tuple[float, int]:
    """(seconds, snapshots written) of one pass."""
    env = {
        "STREAMAPP_MODEL": model,
        "STREAMAPP_SIGNING_KEY": "bench-signing-key-0123456789abcdefghij",  # the HMAC is part of the cost
        "STREAMAPP_SNAPSHOT_IN": "loop" if mode == "none" else mode,
        "STREAMAPP_SNAPSHOT_EVERY_EVENTS": str(every if mode != "none" else 10**9),
        "STREAMAPP_SNAPSHOT_EVERY_SECONDS": "86400",
        "STREAMAPP_PARTITIONS": str(PARTITIONS),
    }

    def outbox(topic: str, partition: int) -> Outbox:
        return NoOutbox()  # type: ignore[return-value]

    table = MemoryTable()
    processor = Processor.from_settings(
        Settings.from_env(env), table, Outputs(nothing, outbox, nothing, nothing)
    )
    start = time.perf_counter()
    for tp, batch in fetched:
        await processor.handle_batch(tp, batch, lambda: True)
        await asyncio.sleep(0)  # a worker's loop turns between fetches: a child's bytes come back
    if processor.writer.running is not None:
        await processor.writer.running[1]
    elapsed = time.perf_counter() - start
    return elapsed, sum(state.runtime.snapshot_seq for state in processor.states.values())


def cost(times: dict[str, list[float]], mode: str) -> str:
    """The median of a mode's cost over the rounds, and its range."""
    ratios = [t / none - 1 for t, none in zip(times[mode], times["none"], strict=True)]
    return f"{statistics.median(ratios):+.1%} ({min(ratios):+.1%}..{max(ratios):+.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="hoeffding_tree,half_space_trees,adaptive_random_forest")
    args = parser.parse_args()
    fetched = batches(args.events)
    gc.freeze()  # as the worker does once started (application.freeze_startup_objects)
    print(
        f"{args.events} card events over {PARTITIONS} partitions, fetched {BATCH} at a time, a snapshot "
        f"every {args.every} events of a partition; median of {args.runs} interleaved runs (min-max)"
    )
    print("| model | events/s, none | loop: cost | child: cost | snapshots (loop / child) |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        taken: dict[str, int] = {}
        for _ in range(args.runs):
            for mode in MODES:
                seconds, taken[mode] = asyncio.run(run(model, fetched, mode, args.every))
                times[mode].append(seconds)
        base = statistics.median(times["none"])

        print(
            f"| {model} | {args.events / base:,.0f} | {cost(times, 'loop')} | {cost(times, 'child')} "
            f"| {taken['loop']} / {taken['child']} |",
            flush=True,
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process {rss:.0f} MB (a fork copies the page tables of what is resident)")


if __name__ == "__main__":
    main()
