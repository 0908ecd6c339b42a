"""Predictions of one partition, packed into Kafka record batches as they are made.

Why: aiokafka's `send()` costs a future, a metadata wait and a key hash per record, about a fifth
of a worker's time on a fast model. Its batch API appends a record to a batch being built and
hands whole batches to the producer. A batch goes out when it is full, when it has been open for
MAX_HOLD seconds, or when the fetched records of the partition are done: a prediction never waits
long for the ones after it.

At least once still holds: the commit flushes the producer before it commits (BatchConsumer),
and the offsets of a partition are committed only after its batch handler returned, that is
after the last batch was handed over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

MAX_HOLD = 0.005  # seconds a batch collects records before it is handed over, at most


class Outbox:
    """Records bound for one topic partition, in order."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        on_delivery: Callable[[asyncio.Future[Any]], None],
        track: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._on_delivery = on_delivery
        self._track = track  # given each batch's delivery future as it is handed over
        self._batch: Any = None
        self._opened = 0.0

    async def add(self, key: bytes | None, value: bytes) -> None:
        if self._batch is None:
            self._batch = self._producer.create_batch()
            self._opened = time.monotonic()
        if self._batch.append(key=key, value=value, timestamp=None) is None:
            # Full: send it and start the next one (a first record always fits).
            await self.send()
            await self.add(key, value)
        elif time.monotonic() - self._opened >= MAX_HOLD:
            await self.send()

    @property
    def pending(self) -> bool:
        """Records were added since the last send."""
        return self._batch is not None and self._batch.record_count() > 0

    async def send(self) -> None:
        """Hand what was added to the producer (it sends within its linger time)."""
        batch, self._batch = self._batch, None
        if batch is None or batch.record_count() == 0:
            return
        future = await self._producer.send_batch(batch, self._topic, partition=self._partition)
        future.add_done_callback(self._on_delivery)
        if self._track is not None:
            self._track(future)
