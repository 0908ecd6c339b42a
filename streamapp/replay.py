"""Reproduce past decisions from Kafka alone: `streamapp replay --partition P --offset O` and the
web view `GET /models/{partition}/explain?offset=O` (streamapp/web/explain.py) run this pipeline.

For partition P: its kept snapshots (the command reads them from the snapshot changelog topic, the
view from its owner's table), its events from the oldest kept snapshot before the first offset
asked up to the last one, and every copy of the prediction records of the offsets asked; each
offset is replayed (audit.reproduce) and compared with its records. All is read with
isolation_level=read_committed: a record of an aborted transaction is no prediction.

A worker that failed (a SIGKILL, a rebalance) writes the predictions of the events it replays a
second time, marked "replayed": true. The report compares the replay with the first copy written,
the decision as it was first made and acted upon, and then every later copy with the replay too:
a copy that differs is a difference like any other.

Exit status of the command: 0 all equal, 1 a decision differs or was never recorded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from faust.types import TP

from streamapp import audit, kafka_security, records, snapshot
from streamapp.output_format import PredictionReader
from streamapp.prediction import Times, prediction_record
from streamapp.processor import Outputs, Processor
from streamapp.settings import Settings
from streamapp.snapshot_store import MemoryTable, snapshot_key

#: the fields of a prediction record a replay must repeat (timings and flags describe the run)
DECISION = ("class", "proba", "value", "score", "alert")
#: how long before its event's record time a prediction record is looked for: the clock skew
#: between the producers and the workers this tolerates
CLOCK_SKEW_MS = 15 * 60 * 1000

Report = dict[str, Any]
T = TypeVar("T")


class TooFar(Exception):
    """More to read and replay than the bounds allow."""


class OutOfTime(Exception):
    """The replay passed its deadline."""


@dataclass(frozen=True)
class Bounds:
    """What one replay may read and compute, and how it shares the process: the command has no
    bounds, the web view runs in a worker's thread within its own."""

    #: events read and replayed, from the oldest kept snapshot before the offset up to it
    events: int | None = None
    #: bytes of those events
    log_bytes: int | None = None
    #: prediction records read from the first event's time on (copies written later are not seen)
    predictions: int | None = None
    #: time.monotonic() by which the replay gives up (OutOfTime)
    deadline: float | None = None
    #: seconds of work after which the replay lets the process's other threads run: in a thread,
    #: it would hold the GIL for up to the switch interval (5 ms) each time the worker's event
    #: loop waits for it, many times per turn of the loop
    pause_every: float | None = None

    def start(self, headers: Iterable[snapshot.Header], offsets: Sequence[int], partition: int) -> int:
        """Where the log is read from: after the oldest kept snapshot taken before the first
        offset (a newer one may not load), else from its start; TooFar when that is more events
        before the last offset than the bounds allow."""
        before = [h.offset for h in headers if h.offset < min(offsets)]
        start = min(before, default=-1) + 1
        if self.events is not None and max(offsets) - start + 1 > self.events:
            raise TooFar(
                f"offset {max(offsets)} of partition {partition} is {max(offsets) - start + 1} events "
                f"after where its replay starts (offset {start}, after the oldest kept snapshot "
                f"before it); at most {self.events} here: `streamapp replay` has no such bound"
            )
        return start

    def pace(self) -> Callable[[], None]:
        """A step to take per piece of work: it raises OutOfTime past the deadline, and pauses
        once `pause_every` seconds of work have passed since its last pause."""
        deadline = math.inf if self.deadline is None else self.deadline
        pause_every = math.inf if self.pause_every is None else self.pause_every
        worked_since = time.monotonic()

        def step() -> None:
            nonlocal worked_since
            now = time.monotonic()
            if now > deadline:
                raise OutOfTime("the replay passed its deadline")
            if now - worked_since > pause_every:
                time.sleep(0)  # releases the GIL: a thread waiting for it takes it now
                worked_since = time.monotonic()

        return step

    def paced(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, a step (`pace`) before each."""
        step = self.pace()
        for item in items:
            step()
            yield item


UNBOUNDED = Bounds()


async def each_record(
    settings: Settings,
    topic: str,
    partition: int,
    start: int = 0,
    stop: int | None = None,
    since_ms: int | None = None,
) -> AsyncGenerator[ConsumerRecord, None]:
    """The committed records of one topic partition, read without a group: from `start` (or the
    first one of record time `since_ms` or later) up to `stop` (default: its end)."""
    async with kafka_security.consumer(
        settings,
        auto_offset_reset="earliest",  # from a start that retention deleted: the log's first record
        isolation_level="read_committed",  # a record of an aborted transaction never counts
    ) as consumer:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset, read_committed
        if stop is not None:
            end = min(end, stop)
        if since_ms is not None:
            found_at = (await consumer.offsets_for_times({tp: since_ms}))[tp]
            start = end if found_at is None else found_at.offset
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in batch:
                    if record.offset < end:
                        yield record


async def read_partition(settings: Settings, topic: str, partition: int) -> list[ConsumerRecord]:
    """Every committed record of one topic partition."""
    async with aclosing(each_record(settings, topic, partition)) as records_read:
        return [record async for record in records_read]


async def _nothing(*args: object) -> None:
    return None


def snapshot_changelog(settings: Settings) -> str:
    """The topic of the snapshot table's changelog: Faust names it after the app and table."""
    return f"{settings.app_id}-snapshots-changelog"


def changelog_table(changelog: Iterable[ConsumerRecord]) -> MemoryTable:
    """The snapshot table as the records of its changelog partition leave it."""
    table = MemoryTable()
    for record in changelog:
        key = orjson.loads(record.key) if record.key else None
        if isinstance(key, str):
            if record.value is None:
                table.pop(key, None)
            else:
                table[key] = record.value
    return table


def kept_table(partition: int, kept: Iterable[tuple[snapshot.Header, bytes]], slots: int) -> MemoryTable:
    """A snapshot table holding a worker's kept snapshots of `partition`, in their slots."""
    return MemoryTable({snapshot_key(partition, header.seq, slots): blob for header, blob in kept})


def processor_over(settings: Settings, table: MemoryTable) -> Processor:
    """The worker's processor over `table`, with no outputs: it only replays."""
    no_outputs = Outputs(_nothing, _nothing, _nothing, _nothing)  # type: ignore[arg-type]
    return Processor.from_settings(settings, table, no_outputs)


@dataclass(frozen=True)
class Evidence:
    """What the topics hold for a replay: the events, and every copy of the prediction records
    of the offsets asked, in the order written."""

    log: list[ConsumerRecord]
    recorded: dict[int, list[dict[str, Any]]]


async def gather(
    settings: Settings, source: TP, offsets: Sequence[int], start: int, bounds: Bounds
) -> Evidence:
    """The events from `start` up to the last offset, and the prediction records written from
    the first asked event's record time (less CLOCK_SKEW_MS) on."""
    log: list[ConsumerRecord] = []
    size = 0
    async with aclosing(
        each_record(settings, source.topic, source.partition, start, max(offsets) + 1)
    ) as events:
        async for record in events:
            size += len(record.value or b"")
            if bounds.log_bytes is not None and size > bounds.log_bytes:
                raise TooFar(
                    f"the events of partition {source.partition} from offset {start} up to "
                    f"{max(offsets)} are over {bounds.log_bytes} bytes, the most read here: "
                    "`streamapp replay` has no such bound"
                )
            log.append(record)
    asked = set(offsets)
    times = [r.timestamp for r in log if r.offset in asked]
    recorded: dict[int, list[dict[str, Any]]] = {}
    if not times:  # none of them is in the log: no record to look for
        return Evidence(log, recorded)
    since_ms = max(0, min(times) - CLOCK_SKEW_MS)
    predictions_topic = settings.predictions_topic
    step = bounds.pace()
    reader = PredictionReader.from_settings(settings)
    try:
        async with aclosing(
            each_record(settings, predictions_topic, source.partition, since_ms=since_ms)
        ) as written:
            read = 0
            async for record in written:
                read += 1
                if bounds.predictions is not None and read > bounds.predictions:
                    break
                step()
                doc = await reader.doc(record.value)
                if isinstance(doc, dict) and doc.get("offset") in asked:
                    recorded.setdefault(doc["offset"], []).append(doc)
    finally:
        await reader.close()
    return Evidence(log, recorded)


def compare(replayed: dict[str, Any], recorded: dict[str, Any] | None) -> list[str]:
    """What differs between the replayed prediction record and the recorded one (empty: equal)."""
    if recorded is None:
        return ["no prediction record for this offset"]
    diffs = [f"{k}: {recorded.get(k)!r} recorded, {replayed.get(k)!r} replayed" for k in DECISION]
    diffs = [d for d, k in zip(diffs, DECISION, strict=True) if replayed.get(k) != recorded.get(k)]
    for k, v in replayed["model"].items():
        if k != "snapshot_seq" and recorded["model"].get(k) != v:
            diffs.append(f"model.{k}: {recorded['model'].get(k)!r} recorded, {v!r} replayed")
    return diffs


def compare_copies(replayed: dict[str, Any], copies: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between the replay and the first copy recorded, then each later copy."""
    diffs = compare(replayed, copies[0] if copies else None)
    for number, copy in enumerate(copies[1:], start=2):
        which = f"copy {number} of {len(copies)}{' (replayed)' if copy.get('replayed') else ''}"
        diffs.extend(f"{which}: {diff}" for diff in compare(replayed, copy))
    return diffs


def report(
    processor: Processor, source: TP, offset: int, evidence: Evidence, settings: Settings, bounds: Bounds
) -> Report:
    """One offset's report: the replayed decision, the recorded one, what differs, why.
    Raises audit.NotReproducible (and OutOfTime)."""
    again = audit.reproduce(processor, source, offset, bounds.paced(evidence.log))
    threshold = settings.anomaly_threshold
    built = prediction_record(again.scored, None, source.partition, offset, Times(0.0, 0.0, 0.0), threshold)
    doc = orjson.loads(records.encode(built))
    del doc["timings"]  # the replay's own: they say nothing of the decision, and vary
    copies = evidence.recorded.get(offset, [])
    diffs = compare_copies(doc, copies)
    return {
        "partition": source.partition,
        "offset": offset,
        "rebuilt_from": again.source,
        "replayed": doc,
        "recorded": copies[0] if copies else None,
        "copies": len(copies),
        "equal": not diffs,
        "differences": diffs,
        "explanation": again.explanation,
    }


async def replay_partition(
    settings: Settings, table: MemoryTable, source: TP, offsets: Sequence[int], bounds: Bounds = UNBOUNDED
) -> list[Report | audit.NotReproducible]:
    """Each asked offset's report, in offset order, or why it cannot be reproduced. Raises
    TooFar before reading when the bounds do not allow the replay, OutOfTime after its deadline."""
    processor = processor_over(settings, table)
    start = bounds.start(processor.kept_headers(source.partition), offsets, source.partition)
    evidence = await gather(settings, source, offsets, start, bounds)
    out: list[Report | audit.NotReproducible] = []
    try:
        await processor.decoder.prepare(evidence.log)  # the Avro writer schemas the log names
        for offset in sorted(offsets):
            try:
                out.append(report(processor, source, offset, evidence, settings, bounds))
            except audit.NotReproducible as exc:
                out.append(exc)
    finally:
        await processor.decoder.close()
    return out


def failed(partition: int, offset: int, why: audit.NotReproducible) -> Report:
    """The report of an offset that cannot be reproduced."""
    return {"partition": partition, "offset": offset, "error": str(why), "equal": False}


async def replay(settings: Settings, partition: int, offsets: Sequence[int]) -> list[Report]:
    """One report per offset, in offset order, the snapshots read from the changelog topic."""
    table = changelog_table(await read_partition(settings, snapshot_changelog(settings), partition))
    source = TP(settings.events_topic, partition)
    outcomes = await replay_partition(settings, table, source, offsets)
    return [
        failed(partition, offset, outcome) if isinstance(outcome, audit.NotReproducible) else outcome
        for offset, outcome in zip(sorted(offsets), outcomes, strict=True)
    ]


def run(settings: Settings, partition: int, offsets: Sequence[int]) -> int:
    reports = asyncio.run(replay(settings, partition, offsets))
    for one in reports:
        print(orjson.dumps(one, option=orjson.OPT_NON_STR_KEYS).decode())
    return 0 if all(r["equal"] for r in reports) else 1
