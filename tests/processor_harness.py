"""The worker's per-message path (Processor.handle_batch) with its outputs kept in memory.

Only the outputs are stand-ins: the processor, the partition state, the decoder, the checks and
the models are the worker's own, so a property shown here holds for every record a worker reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp.processor import Outputs, Processor
from streamapp.settings import Settings
from streamapp.snapshot_store import MemoryTable
from tests import TEST_SIGNING_KEY

TOPIC = "events"


async def nothing(*args: object) -> None:
    return None


def build_processor(table: MemoryTable, outputs: Outputs | None = None, **settings: str) -> Processor:
    """The worker's Processor over an in-memory snapshot table, with STREAMAPP_<NAME> settings.

    Snapshots are made on the loop unless snapshot_in="child" is given: a fetched batch here
    never yields to the loop, so a child would make one snapshot per batch at most, where the
    tests count on one every N events (test_snapshot_writer.py tests the children)."""
    env = {"STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY, "STREAMAPP_SNAPSHOT_IN": "loop"}
    env.update({f"STREAMAPP_{k.upper()}": v for k, v in settings.items()})
    no_outputs = Outputs(nothing, nothing, nothing, nothing)  # type: ignore[arg-type]
    return Processor.from_settings(Settings.from_env(env), table, outputs or no_outputs)


class _Outbox:
    def __init__(self, sink: list[tuple[bytes | None, bytes]]) -> None:
        self.sink = sink

    async def add(self, key: bytes | None, value: bytes) -> None:
        self.sink.append((key, value))

    async def send(self) -> None:
        return None


@dataclass
class Harness:
    """A Processor over one partition whose predictions and dead letters land in lists."""

    processor: Processor
    predictions: list[dict[str, Any]] = field(default_factory=list)
    #: (offset, reason) of every dead letter
    deadletters: list[tuple[int, str]] = field(default_factory=list)
    snapshots: MemoryTable = field(default_factory=MemoryTable)
    offset: int = 0
    #: the offsets the processor moved the consumer back to
    seeks: list[int] = field(default_factory=list)
    #: every (value, headers) fed, by offset: what the partition's log holds
    log: list[tuple[bytes | None, Sequence[tuple[str, bytes]]]] = field(default_factory=list)

    @classmethod
    def build(cls, **settings: str) -> Harness:
        sink: list[tuple[bytes | None, bytes]] = []
        harness: Harness

        async def emit(topic: str, partition: int, key: Any, value: Any, headers: Any) -> None:
            found = dict(headers)
            offset = int(found["streamapp.source.offset"])
            harness.deadletters.append((offset, found["streamapp.error.reason"].decode()))

        async def seek(tp: TP, offset: int) -> None:
            harness.seeks.append(offset)

        def outbox(topic: str, partition: int) -> _Outbox:
            return _Outbox(sink)

        table = MemoryTable()
        processor = build_processor(table, Outputs(emit, outbox, seek, nothing), **settings)
        harness = cls(processor, snapshots=table)
        harness._sink = sink  # type: ignore[attr-defined]
        return harness

    @property
    def state(self) -> Any:
        return self.processor.states[0]

    def feed(
        self,
        values: Sequence[bytes | None],
        headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
        at: float | None = None,
    ) -> None:
        """Append `values` to partition 0's log and hand them to the processor in one fetched batch."""
        self.log.extend(zip(values, headers or [()] * len(values), strict=True))
        self.offset += len(values)
        self.fetch(self.offset - len(values), at)

    def batch(self, start: int, at: float | None = None) -> list[ConsumerRecord]:
        """The log from `start` on, as the consumer would fetch it."""
        timestamp = int((time.time() if at is None else at) * 1000)
        return [
            ConsumerRecord(
                TOPIC, 0, offset, timestamp, 0, b"key", value, None, 3, len(value or b""), tuple(headers)
            )
            for offset, (value, headers) in enumerate(self.log[start:], start=start)
        ]

    async def _handle(self, batch: list[ConsumerRecord]) -> None:
        """The batch, then the snapshot its child is making, if any, written."""
        await self.processor.handle_batch(TP(TOPIC, 0), batch, lambda: True)
        writer = self.processor.writer
        if writer.running is not None:
            await writer.running[1]

    def fetch(self, start: int, at: float | None = None) -> None:
        """Hand the log from `start` on to the processor in one fetched batch, as a consumer that
        was moved (or sought back) to `start` would."""
        batch = self.batch(start, at)
        asyncio.run(self._handle(batch))
        sink = self._sink  # type: ignore[attr-defined]
        self.predictions.extend(orjson.loads(value) for _, value in sink)
        sink.clear()
