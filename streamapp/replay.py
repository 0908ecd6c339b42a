"""`streamapp replay --partition P --offset O`: reproduce past decisions from Kafka alone.

Reads, independently of any worker, partition P's kept snapshots (the snapshot changelog topic),
its events from the snapshot chosen (audit.rebuilt_before) up to O, and the prediction records
written for P; replays each asked offset (audit.reproduce) and says whether the decision equals
the recorded one. Exit status: 0 all equal, 1 a decision differs or was never recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.types import TP

from streamapp import audit, kafka_security, records
from streamapp.prediction import Times, prediction_record
from streamapp.processor import Outputs, Processor
from streamapp.settings import Settings
from streamapp.snapshot_store import MemoryTable

#: the fields of a prediction record a replay must repeat (timings and flags describe the run)
DECISION = ("class", "proba", "value", "score", "alert")


async def read_partition(
    settings: Settings, topic: str, partition: int, start: int = 0
) -> list[ConsumerRecord]:
    """The records of one topic partition from `start` to its end, read without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_security.bootstrap_servers(settings.broker),
        enable_auto_commit=False,
        **kafka_security.aiokafka_auth(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found.extend(r for r in batch if r.offset < end)
        return found
    finally:
        await consumer.stop()


async def _nothing(*args: object) -> None:
    return None


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


async def replay(settings: Settings, partition: int, offsets: Sequence[int]) -> list[dict[str, Any]]:
    """One report per offset: the replayed decision, the recorded one, what differs, why."""
    changelog = f"{settings.app_id}-snapshots-changelog"
    table = MemoryTable()
    for record in await read_partition(settings, changelog, partition):
        key = orjson.loads(record.key) if record.key else None
        if isinstance(key, str):
            if record.value is None:
                table.pop(key, None)
            else:
                table[key] = record.value
    no_outputs = Outputs(_nothing, _nothing, _nothing, _nothing)  # type: ignore[arg-type]
    processor = Processor.from_settings(settings, table, no_outputs)
    source = TP(settings.events_topic, partition)
    # From the oldest kept snapshot before the first offset asked: a newer one may not load.
    before = [h.offset for h in processor.kept_headers(partition) if h.offset < min(offsets)]
    log = await read_partition(settings, source.topic, partition, start=min(before, default=-1) + 1)
    recorded: dict[int, dict[str, Any]] = {}
    for record in await read_partition(settings, settings.predictions_topic, partition):
        doc = orjson.loads(record.value)
        recorded[doc["offset"]] = doc  # the last copy written wins, as downstream would see it
    reports = []
    for offset in sorted(offsets):
        try:
            again = audit.reproduce(processor, source, offset, log)
        except audit.NotReproducible as exc:
            reports.append({"partition": partition, "offset": offset, "error": str(exc), "equal": False})
            continue
        scored = again.scored
        threshold = settings.anomaly_threshold
        built = prediction_record(scored, None, partition, offset, Times(0.0, 0.0, 0.0), threshold)
        doc = orjson.loads(records.encode(built))
        diffs = compare(doc, recorded.get(offset))
        reports.append(
            {
                "partition": partition,
                "offset": offset,
                "rebuilt_from": again.source,
                "replayed": doc,
                "recorded": recorded.get(offset),
                "equal": not diffs,
                "differences": diffs,
                "explanation": again.explanation,
            }
        )
    return reports


def run(settings: Settings, partition: int, offsets: Sequence[int]) -> int:
    reports = asyncio.run(replay(settings, partition, offsets))
    for report in reports:
        print(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS).decode())
    return 0 if all(r["equal"] for r in reports) else 1
