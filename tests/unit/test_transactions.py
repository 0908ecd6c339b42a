"""Exactly once, as a property: whatever the batch boundaries, crashes and zombies, the outputs a
read_committed consumer sees are one per source offset, each the uninterrupted run's.

The broker here is a model of Kafka's transaction coordinator (the classic fencing of KIP-98: a
new producer with the same transactional id bumps its epoch, aborts its open transaction, and
every later call of the old one fails with ProducerFenced). Everything else is the worker's own
code: Transactions, the Processor, recovery's resume_at_model_offsets and the snapshot store.
The real broker's version of this is tests/integration/test_exactly_once.py.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, ProducerFenced
from faust.types import TP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp import datasets, producer
from streamapp.processor import Outputs, Processor
from streamapp.recovery import resume_at_model_offsets
from streamapp.snapshot_store import MemoryTable
from streamapp.transactions import Transactions
from tests.processor_harness import build_processor, nothing

SOURCE = TP("events", 0)
LOG = [value for _, value in producer.messages(datasets.load("phishing", limit=160))]
LOG[37] = b"not json"  # a dead letter too


@dataclass
class Coordinator:
    """Kafka's transaction coordinator and group coordinator, for one partition."""

    epochs: dict[str, int] = field(default_factory=dict)
    committed: int | None = None
    #: (topic, offset of the source event or -1) of every committed output record, in order
    visible: list[tuple[str, bytes]] = field(default_factory=list)
    fail_next_commit: bool = False
    #: the next record batch handed over is never acknowledged (a request timeout): aiokafka
    #: does not fail the transaction for it, only the record's future
    lose_next_send: bool = False


class Batch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, key: Any, value: bytes, timestamp: Any) -> object:
        self.records.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.records)


def done(coordinator: Coordinator) -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    if coordinator.lose_next_send:
        coordinator.lose_next_send = False
        future.set_exception(KafkaTimeoutError())
    else:
        future.set_result(None)
    return future


class TransactionalProducer:
    def __init__(self, coordinator: Coordinator, tid: str) -> None:
        self.coordinator, self.tid = coordinator, tid
        self.epoch = -1
        self.pending: list[tuple[str, bytes]] | None = None
        self.offsets: int | None = None

    def _check(self) -> None:
        if self.coordinator.epochs[self.tid] != self.epoch:
            raise ProducerFenced()

    async def start(self) -> None:
        self.epoch = self.coordinator.epochs[self.tid] = self.coordinator.epochs.get(self.tid, 0) + 1

    async def stop(self) -> None:
        return None

    async def begin_transaction(self) -> None:
        self._check()
        assert self.pending is None, "one transaction at a time"
        self.pending, self.offsets = [], None

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self._check()
        assert self.pending is not None, "Can't send messages while not in transaction"
        if not self.coordinator.lose_next_send:
            self.pending.extend((topic, value) for value in batch.records)
        return done(self.coordinator)

    async def send(
        self, topic: str, value: bytes, key: Any, partition: int, *rest: Any
    ) -> asyncio.Future[None]:
        self._check()
        assert self.pending is not None, "Can't send messages while not in transaction"
        if not self.coordinator.lose_next_send:
            self.pending.append((topic, value))
        return done(self.coordinator)

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group_id: str) -> None:
        self._check()
        assert self.pending is not None
        (self.offsets,) = offsets.values()

    async def commit_transaction(self) -> None:
        self._check()
        assert self.pending is not None
        if self.coordinator.fail_next_commit:
            self.coordinator.fail_next_commit = False
            raise KafkaConnectionError("the broker went away")
        self.coordinator.visible.extend(self.pending)
        if self.offsets is not None:
            self.coordinator.committed = self.offsets
        self.pending = None

    async def abort_transaction(self) -> None:
        self._check()
        self.pending = None


class Consumer:
    """The part of the worker's consumer recovery uses, over the coordinator."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.position = 0

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return {SOURCE: self.coordinator.committed}

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return {SOURCE: 0}

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        return {SOURCE: len(LOG)}

    async def _commit(self, offsets: Any) -> bool:
        raise AssertionError("exactly once never rewinds the committed offset")

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.position = partitions[SOURCE]


class Worker:
    """One owner of the partition: claim, recover, then process fetched batches."""

    def __init__(self, coordinator: Coordinator, table: MemoryTable, **settings: str) -> None:
        self.coordinator = coordinator
        self.transactions = Transactions(
            "app", "app", 0.1, lambda tid: TransactionalProducer(coordinator, tid)
        )
        self.failed: list[BaseException] = []

        async def failed(partition: int, exc: BaseException) -> None:
            self.failed.append(exc)
            self.processor.release(partition)

        self.transactions.on_failure = failed
        outputs = Outputs(nothing, nothing, nothing, nothing, self.transactions)  # type: ignore[arg-type]
        self.processor: Processor = build_processor(
            table,
            outputs,
            snapshot_every_events="25",
            snapshot_every_seconds="3600",
            snapshots_kept="2",
            **settings,
        )
        self.consumer = Consumer(coordinator)

    async def claim(self) -> None:
        await self.transactions.claim([SOURCE])
        plan = await resume_at_model_offsets(self.processor, self.consumer, [SOURCE], rewind_commit=False)
        committed, resume = plan[0]
        txn = self.transactions.get(0)
        assert txn is not None
        txn.start_at(max(committed or 0, resume))

    async def process(self, count: int, commit: bool) -> None:
        """Fetch up to `count` records from the consumer's position; commit the transaction."""
        start = self.consumer.position
        batch = [
            ConsumerRecord("events", 0, o, 1_000, 0, b"k", LOG[o], None, 3, 10, ())
            for o in range(start, min(start + count, len(LOG)))
        ]
        self.consumer.position += len(batch)
        await self.processor.handle_batch(SOURCE, batch, lambda: True)
        txn = self.transactions.get(0)
        if commit and txn is not None and txn.ready:
            async with txn.lock:
                await self.transactions.commit(txn)


def uninterrupted() -> dict[int, bytes]:
    """Each offset's output in a run without failures: the oracle."""
    coordinator = Coordinator()
    outputs = asyncio.run(run(coordinator, [(len(LOG), "commit")]))
    return outputs


async def run(coordinator: Coordinator, steps: list[tuple[int, str]]) -> dict[int, bytes]:
    table = MemoryTable()
    worker = Worker(coordinator, table)
    await worker.claim()
    zombie: Worker | None = None
    for count, action in steps:
        if action == "crash":  # SIGKILL: a new owner claims, the old one is gone
            await worker.process(count, commit=False)
            worker = Worker(coordinator, table)
            await worker.claim()
        elif action == "zombie":  # stopped past the session timeout: a new owner claims, then it wakes
            zombie, worker = worker, Worker(coordinator, table)
            await worker.claim()
            if zombie.consumer.position >= len(LOG):
                continue
            before = len(zombie.failed)
            await zombie.process(count, commit=True)
            # A zombie that only replayed (below the committed offset) wrote nothing to fail on.
            if len(zombie.failed) > before:
                assert isinstance(zombie.failed[-1], ProducerFenced)
                assert 0 not in zombie.processor.states, "a fenced state is dropped"
        elif action == "lost":  # a record of the transaction is never acknowledged
            coordinator.lose_next_send = True
            await worker.process(count, commit=True)
            if coordinator.lose_next_send:  # nothing was sent
                coordinator.lose_next_send = False
                continue
            assert isinstance(worker.failed[-1], KafkaTimeoutError) and 0 not in worker.processor.states
            await worker.claim()
        elif action == "broker":  # the commit fails without fencing: the state goes, claim again
            coordinator.fail_next_commit = True
            await worker.process(count, commit=True)
            if coordinator.fail_next_commit:  # nothing was left to commit
                coordinator.fail_next_commit = False
                continue
            assert isinstance(worker.failed[-1], KafkaConnectionError) and 0 not in worker.processor.states
            await worker.claim()
        else:
            await worker.process(count, commit=action == "commit")
    while worker.consumer.position < len(LOG):
        await worker.process(50, commit=True)
    txn = worker.transactions.get(0)
    assert txn is not None
    async with txn.lock:
        assert await worker.transactions.commit(txn)
    return outputs_by_offset(coordinator)


def outputs_by_offset(coordinator: Coordinator) -> dict[int, bytes]:
    seen: dict[int, bytes] = {}
    for topic, value in coordinator.visible:
        if topic == "deadletter":
            offset = 37
        else:
            doc = orjson.loads(value)
            offset = doc["offset"]
            # snapshot_seq depends on the batches (a snapshot waits for its transaction's commit)
            doc["model"].pop("snapshot_seq")
            value = orjson.dumps({k: doc[k] for k in ("class", "proba", "model")})
        assert offset not in seen, f"offset {offset} is visible twice"
        seen[offset] = value
    return seen


ORACLE = functools.cache(uninterrupted)


def test_the_oracle_has_one_output_per_offset() -> None:
    assert sorted(ORACLE()) == list(range(len(LOG)))


#: what happens after a fetched batch (see run)
ACTIONS = ["commit", "open", "crash", "zombie", "broker", "lost"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.sampled_from(ACTIONS)),
        max_size=10,
    )
)
def test_every_offset_is_visible_once_whatever_fails(steps: list[tuple[int, str]]) -> None:
    outputs = asyncio.run(run(Coordinator(), steps))
    assert outputs == ORACLE()


def test_a_snapshot_is_never_ahead_of_the_committed_offset() -> None:
    coordinator = Coordinator()
    table = MemoryTable()

    async def scenario() -> None:
        worker = Worker(coordinator, table)
        await worker.claim()
        for _ in range(6):
            await worker.process(20, commit=False)  # snapshots fall due, transactions stay open
            state = worker.processor.states[0]
            assert state.runtime.snapshot_offset < (coordinator.committed or 0)

    asyncio.run(scenario())


class ReclaimingConsumer(Consumer):
    """The worker's consumer as Rebalance.reclaim uses it (committed_offset reads, never seeks)."""

    async def committed_offset(self, tp: TP) -> int | None:
        return self.coordinator.committed


def test_a_failed_commit_is_claimed_again_after_a_session_timeout_if_still_ours() -> None:
    """Rebalance.transaction_failed: the state goes at once; a session timeout later, the
    partition (still assigned, same generation) gets a new producer and resumes from its
    snapshot at the committed offset, and the outputs stay one per offset."""
    from types import SimpleNamespace

    from streamapp.recovery import Rebalance

    coordinator = Coordinator()

    async def scenario() -> dict[int, bytes]:
        worker = Worker(coordinator, MemoryTable(), session_timeout="0.01")
        await worker.claim()
        worker.consumer = ReclaimingConsumer(coordinator)
        app = SimpleNamespace(rebalancing=False, consumer_generation_id=7, consumer=worker.consumer)
        sources = SimpleNamespace(source_topic=lambda partition: SOURCE.topic)
        rebalance = Rebalance(app, worker.processor, sources, None, ())  # type: ignore[arg-type]
        await worker.process(60, commit=True)
        coordinator.fail_next_commit = True
        await worker.process(30, commit=True)
        assert 0 not in worker.processor.states and not worker.transactions.get(0).ready  # type: ignore[union-attr]
        await asyncio.gather(*rebalance.reclaims)
        txn = worker.transactions.get(0)
        assert txn is not None and txn.ready and txn.committed == coordinator.committed
        assert worker.consumer.position <= (coordinator.committed or 0)  # replays from its snapshot
        while worker.consumer.position < len(LOG):
            await worker.process(50, commit=True)
        return outputs_by_offset(coordinator)

    assert asyncio.run(scenario()) == ORACLE()
