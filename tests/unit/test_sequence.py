"""The sequence topic's parts without Kafka: the forwarder's copies and headers, and a partition
applying each copied record once however often it was copied (streamapp/sequence.py)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

from aiokafka import ConsumerRecord
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp import models, partition, sequence
from streamapp.partition import Copy, Duplicate, Labelled, PartitionConfig, PartitionState, Scored
from streamapp.records import Event, LateLabel


def record(offset: int, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(
        "labels", 2, offset, 1_790_000_000_500, 0, b"card", value, None, 0, 0, headers or []
    )


def test_the_forwarder_copies_in_order_with_the_source_and_drops_forged_headers() -> None:
    sent: list[tuple[Any, ...]] = []

    async def send(*args: Any) -> asyncio.Future[None]:
        sent.append(args)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    forwarder = sequence.Forwarder(send, "app-sequence", "labels")
    batch = [
        record(7, b"a", [("trace", b"1"), (sequence.ORIGIN, b"events"), (sequence.ORIGIN_OFFSET, b"0")]),
        record(8, b"b"),
    ]
    last = asyncio.run(forwarder.forward(TP("labels", 2), batch, lambda: True))
    assert last == 8
    assert [s[:5] for s in sent] == [
        ("app-sequence", b"card", b"a", 2, 1_790_000_000.5),
        ("app-sequence", b"card", b"b", 2, 1_790_000_000.5),
    ]
    assert sent[0][5] == [("trace", b"1"), (sequence.ORIGIN, b"labels"), (sequence.ORIGIN_OFFSET, b"7")]
    copy = record(0, b"a", sent[0][5])
    assert sequence.origin(copy) == ("labels", 7)
    assert sequence.origin(record(0, b"a", [(sequence.ORIGIN, b"labels")])) is None


def state() -> PartitionState:
    return PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=100))


@settings(max_examples=100, deadline=None)
@given(repeats=st.lists(st.integers(0, 3), min_size=1, max_size=30))
def test_a_copied_record_is_applied_once_however_often_it_was_copied(repeats: list[int]) -> None:
    """The sequence as an at-least-once forwarder may write it: after a crash, a run of records
    is copied again from the last committed source offset."""
    once, twice = state(), state()
    messages = [
        Copy("events", n, Event(f"e{n}", {"f": float(n % 7)}, bool(n % 2) if n % 3 else None, None))
        for n in range(len(repeats))
    ]
    for offset, message in enumerate(messages):
        once.apply(offset, message)
    log: list[Copy] = []
    for n, back in enumerate(repeats):
        log.append(messages[n])
        log.extend(messages[max(0, n - back + 1) : n + 1] if back else [])  # copied again
    outcomes = [twice.apply(offset, message) for offset, message in enumerate(log)]
    assert sum(isinstance(o, Duplicate) for o in outcomes) == len(log) - len(messages)
    assert twice.duplicates == len(log) - len(messages)
    assert twice.source_offsets == once.source_offsets == {"events": len(messages) - 1}
    assert twice.champion.metrics.values() == once.champion.metrics.values()
    assert twice.events_seen == once.events_seen == len(messages)


def test_labels_and_events_keep_their_own_source_offsets_through_a_snapshot() -> None:
    s = state()
    assert isinstance(s.apply(0, Copy("events", 5, Event("a", {"f": 1.0}, None, None))), Scored)
    assert isinstance(s.apply(1, Copy("labels", 5, LateLabel("a", True))), Labelled)
    assert isinstance(s.apply(2, Copy("labels", 5, LateLabel("a", True))), Duplicate)
    restored = pickle.loads(pickle.dumps(s))
    assert restored.source_offsets == {"events": 5, "labels": 5} and restored.duplicates == 1


def test_a_snapshot_from_before_the_sequence_topic_loads_with_none_applied() -> None:
    s = state()
    older = s.__getstate__()
    for name in partition.added_since_format_3():
        del older[name]
    restored = PartitionState.__new__(PartitionState)
    restored.__setstate__(older)
    assert restored.source_offsets == {} and restored.duplicates == 0
    assert set(partition.added_since_format_3()) <= set(vars(s)), "a new state has them all"
