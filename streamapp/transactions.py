"""Exactly-once outputs (STREAMAPP_PROCESSING_GUARANTEE=exactly_once): a partition's predictions,
its dead letters and the source offsets they cover commit in one Kafka transaction.

The invariant, per source partition p with committed offset C(p) in the consumer group: a
read_committed consumer sees the outputs of exactly the source offsets below C(p), once each.
- A transaction commits the outputs of the offsets it covers together with C(p) = last covered + 1,
  and C(p) never moves back.
- A new owner replays the offsets below C(p) into its model without emitting them (their outputs
  are visible already) and emits from C(p) on.
- A snapshot is written only after the transaction covering its offset committed, so a restored
  model is never past C(p): no offset is learned without its output becoming visible.

Fencing zombies, and why one transactional id per partition. The classic scheme (KIP-98) gives
each source partition its own transactional id, "{app_id}-eos-{partition}". The worker that is
assigned p starts a producer with that id (`init_transactions`): the coordinator aborts, or
completes, the previous owner's open transaction and fences its producer for good. Only then does
recovery read C(p), which no zombie can move any more. The scheme of KIP-447 (one producer per
worker, fenced by the consumer group's generation) needs TxnOffsetCommit v3 with the generation
and member id; aiokafka 0.14 sends v0 only, and its send_offsets_to_transaction takes a group id
string instead of the consumer's group metadata. With it, a zombie's offsets would be accepted.
The cost of the classic scheme is one producer (and its connections) per partition a worker
processes, and a claim per partition at every rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from faust.types import TP

from streamapp.outbox import Outbox

log = logging.getLogger(__name__)

#: the broker aborts a transaction its producer left open this long (a worker that stopped)
TRANSACTION_TIMEOUT_MS = 30_000

#: errors after which another worker holds the partition: wait for the rebalance, never reclaim
FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)


def transactional_id(app_id: str, partition: int) -> str:
    return f"{app_id}-eos-{partition}"


class PartitionTransaction:
    """One source partition's transactional producer and the transaction it has open: the
    processor's Sink for the partition's outputs."""

    exactly_once = True

    def __init__(self, producer: AIOKafkaProducer, source: TP, group_id: str) -> None:
        self.producer = producer
        self.source = source
        self.group_id = group_id
        #: held while a batch adds to the transaction or the transaction commits
        self.lock = asyncio.Lock()
        self.committed = -1  # C(p); -1 until recovery has read it
        self.covered = -1  # the last source offset whose outputs are in the transaction (or committed)
        self.opened_at: float | None = None  # monotonic time the open transaction began
        self.failed: BaseException | None = None
        #: the delivery futures of the outputs in the open transaction
        self.in_flight: list[asyncio.Future[Any]] = []

    @property
    def ready(self) -> bool:
        return self.committed >= 0 and self.failed is None

    def start_at(self, committed: int) -> None:
        """Recovery read C(p) after this producer fenced the previous owner."""
        self.committed, self.covered = committed, committed - 1

    async def begin(self) -> None:
        if self.opened_at is None:
            await self.producer.begin_transaction()
            self.opened_at = time.monotonic()

    def cover(self, offset: int) -> None:
        """The outputs of `offset` are in the transaction (or there are none)."""
        if offset > self.covered:
            self.covered = offset

    def due(self, interval: float, now: float | None = None) -> bool:
        """Open for `interval` seconds or longer."""
        return self.opened_at is not None and (now or time.monotonic()) - self.opened_at >= interval

    def outbox(self, topic: str, partition: int) -> Outbox:
        return TransactionOutbox(self, topic, partition)

    async def emit(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any
    ) -> None:
        await self.begin()
        self.track(await self.producer.send(topic, value, key, partition, None, headers))

    def track(self, future: asyncio.Future[Any]) -> None:
        self.in_flight.append(future)

    async def delivered(self) -> None:
        """Every output of the open transaction is acknowledged; raises the first that is not.
        A record can fail (a request timeout) without failing the transaction in aiokafka: its
        commit must not go ahead, or the offset would cover an output that was never written."""
        in_flight, self.in_flight = self.in_flight, []
        for result in await asyncio.gather(*in_flight, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def commit(self) -> None:
        """Commit the outputs added so far with C(p) = last covered + 1; raises what failed."""
        if self.covered + 1 > self.committed:
            await self.begin()
            offsets = {TopicPartition(self.source.topic, self.source.partition): self.covered + 1}
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
        if self.opened_at is None:
            return
        await self.delivered()
        await self.producer.commit_transaction()
        self.opened_at = None
        self.committed = max(self.committed, self.covered + 1)

    async def abort(self) -> None:
        """Abort what is open, if the producer still can (a fenced one cannot: the coordinator
        aborted it already)."""
        self.in_flight.clear()
        if self.opened_at is None:
            return
        self.opened_at = None
        try:
            await self.producer.abort_transaction()
        except Exception as exc:  # fenced, or the broker is gone: the coordinator aborts it
            log.info("partition %d: transaction not aborted by this worker: %r", self.source.partition, exc)

    async def close(self) -> None:
        await self.abort()
        try:
            await self.producer.stop()
        except Exception as exc:
            log.info("partition %d: transactional producer stopped with %r", self.source.partition, exc)


def ignore(future: asyncio.Future[Any]) -> None:
    """A batch's outcome is checked before its transaction commits (PartitionTransaction.delivered)."""


class TransactionOutbox(Outbox):
    """An outbox whose batches go into the partition's transaction, begun by the first one."""

    def __init__(self, txn: PartitionTransaction, topic: str, partition: int) -> None:
        super().__init__(txn.producer, topic, partition, ignore, txn.track)
        self._txn = txn

    async def send(self) -> None:
        if self.pending:
            await self._txn.begin()
        await super().send()


#: builds a transactional producer for an id (the application passes the worker's settings)
ProducerFactory = Callable[[str], AIOKafkaProducer]


class Transactions:
    """The transactional producers of the partitions this worker processes."""

    def __init__(self, app_id: str, group_id: str, interval: float, new_producer: ProducerFactory) -> None:
        self.app_id = app_id
        self.group_id = group_id
        self.interval = interval
        self.new_producer = new_producer
        self.partitions: dict[int, PartitionTransaction] = {}
        #: called with (partition, error) when a partition's transaction failed: its state must go
        self.on_failure: Callable[[int, BaseException], Awaitable[None]] | None = None

    def get(self, partition: int) -> PartitionTransaction | None:
        return self.partitions.get(partition)

    async def claim(self, sources: Iterable[TP]) -> None:
        """Hold exactly these partitions: a new producer each (fencing any earlier holder, this
        worker's own included) and none for the rest."""
        await self.release()
        wanted = sorted(sources)
        claimed = await asyncio.gather(*(self._claim(tp) for tp in wanted), return_exceptions=True)
        for tp, result in zip(wanted, claimed, strict=True):
            if isinstance(result, BaseException):
                raise RuntimeError(f"partition {tp.partition}: transactional id not claimed") from result
            self.partitions[tp.partition] = result

    async def _claim(self, source: TP) -> PartitionTransaction:
        producer = self.new_producer(transactional_id(self.app_id, source.partition))
        try:
            await producer.start()  # init_transactions: fences the earlier holder
        except BaseException:
            await producer.stop()
            raise
        return PartitionTransaction(producer, source, self.group_id)

    async def reclaim(self, source: TP) -> PartitionTransaction:
        """A new producer for one partition whose transaction failed (not fenced)."""
        old = self.partitions.pop(source.partition, None)
        if old is not None:
            await old.close()
        self.partitions[source.partition] = claimed = await self._claim(source)
        return claimed

    async def release(self, keep: Iterable[int] = ()) -> None:
        """Commit and stop the producers of all partitions but `keep`."""
        kept = set(keep)
        for partition in sorted(set(self.partitions) - kept):
            txn = self.partitions.pop(partition)
            async with txn.lock:
                await self._commit(txn)
                await txn.close()

    async def commit_due(self, force: bool = False) -> None:
        """Commit every transaction open for `interval` (all open ones with `force`): the idle
        partitions' outputs become visible, and a rebalance or a stop hands over all of them."""
        now = time.monotonic()
        for txn in list(self.partitions.values()):
            if txn.opened_at is None or not (force or txn.due(self.interval, now)):
                continue
            async with txn.lock:
                await self._commit(txn)

    async def commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval / 2)
            try:
                await self.commit_due()
            except Exception:  # a failed commit is handled in _commit; this is a bug: say so, go on
                log.exception("streamapp: committing the open transactions failed")

    async def commit(self, txn: PartitionTransaction) -> bool:
        """Commit `txn` (its lock held); False if it failed (the failure is handled)."""
        return await self._commit(txn)

    async def _commit(self, txn: PartitionTransaction) -> bool:
        if not txn.ready:
            return False
        try:
            await txn.commit()
        except Exception as exc:
            await self.fail(txn, exc)
            return False
        return True

    async def fail(self, txn: PartitionTransaction, exc: BaseException) -> None:
        """The transaction is lost (aborted, by this worker or by the coordinator): nothing of it
        becomes visible, and the partition's in-memory state, which learned it, must go."""
        txn.failed = exc
        fenced = isinstance(exc, FENCED)
        log.error(
            "partition %d: TRANSACTION FAILED (%s: %s); its outputs are aborted and %s",
            txn.source.partition,
            type(exc).__name__,
            exc,
            "another worker holds the partition now" if fenced else "the partition is claimed again",
        )
        if fenced:
            txn.opened_at = None  # the coordinator aborted it when the new holder claimed the id
        else:
            await txn.abort()
        if self.on_failure is not None:
            await self.on_failure(txn.source.partition, exc)

    async def close(self) -> None:
        await self.release()


def producer_factory(bootstrap: list[str], max_request_size: int, auth: dict[str, Any]) -> ProducerFactory:
    """Transactional producers with the worker's connection settings (idempotent and acks=all,
    as aiokafka requires of a transactional producer)."""

    def new_producer(tid: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=tid,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            max_batch_size=256 * 1024,
            max_request_size=max_request_size,
            **auth,
        )

    return new_producer
