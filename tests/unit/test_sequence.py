"""The sequence topic's parts without Kafka: the forwarder's copies and headers, and a partition
applying each copied record once however often it was copied (streamapp/sequence.py)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any
from unittest import mock

import pytest
from aiokafka import ConsumerRecord
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp import models, partition, sequence
from streamapp.decoding import Decoder
from streamapp.gaps import MAX_RESEEKS, GapError
from streamapp.partition import Copy, Duplicate, Labelled, PartitionConfig, PartitionState, Refused, Scored
from streamapp.reading import RecordReader
from streamapp.records import NO_VALUE, Event, LateLabel, Limits
from streamapp.settings import Secret, Settings
from streamapp.signing import Signer
from tests import TEST_SIGNING_KEY


def record(offset: int, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(
        "labels", 2, offset, 1_790_000_000_500, 0, b"card", value, None, 0, 0, headers or []
    )


class Group:
    """One source partition as the forwarder sees it: the group's committed offset, the log's
    first offset, the copies the broker acknowledged and the seeks asked for."""

    def __init__(self, committed: int | None = None, earliest: int = 0, end: int = 1000) -> None:
        self.committed, self.earliest, self.end = committed, earliest, end
        self.sent: list[tuple[Any, ...]] = []
        self.seeks: list[tuple[TP, int]] = []
        self.state = state()

    async def committed_offset(self, tp: TP) -> int | None:
        return self.committed

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return dict.fromkeys(partitions, self.earliest)

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        return dict.fromkeys(partitions, self.end)

    async def send(self, *args: Any) -> asyncio.Future[None]:
        self.sent.append(args)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def forwarder(self) -> sequence.Forwarder:
        sources = sequence.Sources(lambda: self, self.seek, lambda p: self.state)
        return sequence.Forwarder(self.send, "app-sequence", "labels", sources, max_bytes=100)

    def copied(self) -> list[int]:
        return [int(dict(s[5])[sequence.ORIGIN_OFFSET]) for s in self.sent]


def forward(forwarder: sequence.Forwarder, offsets: list[int], topic: str = "labels") -> int | None:
    async def run() -> int | None:
        last = await forwarder.forward(TP(topic, 2), [record(o, b"v") for o in offsets], lambda: True)
        await asyncio.sleep(0)  # the seek back runs in the background
        return last

    return asyncio.run(run())


def test_the_forwarder_copies_in_order_with_the_source_and_drops_forged_headers() -> None:
    group = Group(committed=7)
    sent = group.sent
    batch = [
        record(7, b"a", [("trace", b"1"), (sequence.ORIGIN, b"events"), (sequence.ORIGIN_OFFSET, b"0")]),
        record(8, b"b"),
    ]
    last = asyncio.run(group.forwarder().forward(TP("labels", 2), batch, lambda: True))
    assert last == 8
    assert [s[:5] for s in sent] == [
        ("app-sequence", b"card", b"a", 2, 1_790_000_000.5),
        ("app-sequence", b"card", b"b", 2, 1_790_000_000.5),
    ]
    assert sent[0][5] == [("trace", b"1"), (sequence.ORIGIN, b"labels"), (sequence.ORIGIN_OFFSET, b"7")]
    copy = record(0, b"a", sent[0][5])
    assert sequence.origin(copy) == ("labels", 7)
    assert sequence.origin(record(0, b"a", [(sequence.ORIGIN, b"labels")])) is None


def test_the_forwarder_starts_at_the_committed_offset_and_copies_nothing_twice() -> None:
    group = Group(committed=5)
    forwarder = group.forwarder()
    assert forward(forwarder, [3, 4, 5, 6]) == 6, "3 and 4 were copied before the commit"
    assert forward(forwarder, [5, 6, 7]) == 7, "fetched again after a rebalance kept it here"
    assert group.copied() == [5, 6, 7] and group.seeks == []


def test_a_batch_past_the_next_offset_is_not_copied_and_the_consumer_goes_back() -> None:
    """Faust dropped a fetched batch (18 events, seen across a SIGKILL) and fetched on from after
    it: copying on would commit past records nobody copied."""
    group = Group(committed=0)
    forwarder = group.forwarder()
    assert forward(forwarder, [0, 1]) == 1
    assert forward(forwarder, [20, 21]) == 1, "the commit stays before the gap"
    assert group.copied() == [0, 1] and group.seeks == [(TP("labels", 2), 2)]
    assert group.state.gaps == 1
    assert forward(forwarder, list(range(2, 22))) == 21
    assert group.copied() == list(range(22))


def test_copying_stops_at_a_gap_in_the_middle_of_a_batch() -> None:
    group = Group(committed=0)
    forwarder = group.forwarder()
    assert forward(forwarder, [0, 1, 3, 4]) == 1
    assert group.copied() == [0, 1] and group.seeks == [(TP("labels", 2), 2)]


def test_a_gap_that_never_fills_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 3))  # 3 s between two gaps: each may seek back
    monkeypatch.setattr("streamapp.gaps.time.monotonic", lambda: float(next(clock)))
    group = Group(committed=10)
    forwarder = group.forwarder()
    for _ in range(MAX_RESEEKS):
        assert forward(forwarder, [15]) == 9
    assert [offset for _, offset in group.seeks] == [10] * MAX_RESEEKS
    with pytest.raises(GapError, match=r"offsets 10\.\.14 of labels never arrive"):
        forward(forwarder, [15])
    assert group.sent == []


def test_records_deleted_before_they_were_copied_are_counted_as_lost() -> None:
    group = Group(committed=4, earliest=10)
    assert forward(group.forwarder(), [10, 11]) == 11
    assert group.copied() == [10, 11] and group.state.events_lost_to_retention == 6


def test_a_commit_past_the_end_of_the_log_starts_over_from_its_first_record() -> None:
    """The topic was deleted and created again: its new records are copied, not skipped as old."""
    group = Group(committed=500, earliest=0, end=3)
    assert forward(group.forwarder(), [0, 1, 2]) == 2 and group.copied() == [0, 1, 2]


def test_a_group_that_never_committed_copies_from_the_log_s_first_record() -> None:
    group = Group(committed=None, earliest=3)
    assert forward(group.forwarder(), [3, 4]) == 4
    assert group.copied() == [3, 4] and group.state.events_lost_to_retention == 0


def test_a_partition_given_away_is_read_from_the_group_again_when_it_comes_back() -> None:
    group = Group(committed=0)
    forwarder = group.forwarder()
    forward(forwarder, [0, 1, 2])
    forwarder.keep_only([TP("events", 2)])  # "labels" 2 went to another worker
    group.committed = 50  # which copied up to 49
    assert forward(forwarder, [50]) == 50 and group.copied() == [0, 1, 2, 50]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["fetch", "drop", "cut", "commit", "rebalance", "crash"]), st.integers(1, 6)
        ),
        max_size=40,
    )
)
def test_every_source_offset_reaches_the_sequence_in_order_whatever_faust_drops(
    steps: list[tuple[str, int]],
) -> None:
    """A consumer fetching batches of one source partition while Faust drops some of them
    ("drop": fetched, never handed on, the position moved past them), a rebalance stops one
    half-way ("cut"), the group commits what the forwarder returned, the partition is reassigned
    ("rebalance": the position goes back to the committed offset) or the worker dies ("crash": a
    new forwarder). However these interleave, the first copy of each source offset appears in
    the sequence topic in offset order, none missing, and nothing past a missing one is ever
    committed."""
    end, clock = 30, iter(range(0, 10_000, 3))  # 3 s between two gaps: each may seek back
    group = Group(committed=None)
    tp = TP("events", 2)

    async def run() -> int:
        nonlocal end
        forwarder, position, returned = group.forwarder(), 0, None

        async def seek(_: TP, offset: int) -> None:
            nonlocal position
            position = offset

        forwarder.sources.seek = seek

        async def fetch(n: int, handed_on: int | None) -> None:
            nonlocal position, returned
            batch = [record(o, b"v") for o in range(position, min(position + n, end))]
            position += len(batch)
            if handed_on is None:
                return  # dropped
            calls = iter(range(handed_on + 1, -2 - n, -1))  # one call more: before the batch
            last = await forwarder.forward(tp, batch, lambda: next(calls) > 0)
            returned = last if last is not None else returned
            await asyncio.sleep(0)  # a seek back lands

        for step, n in steps:
            if step in ("fetch", "drop", "cut"):
                await fetch(n, {"fetch": n, "drop": None, "cut": n // 2}[step])
            elif step == "commit" and returned is not None:
                group.committed = returned + 1
                assert set(group.copied()) >= set(range(group.committed)), "committed past a missing copy"
            elif step == "rebalance":
                forwarder.keep_only([] if n % 2 else [tp])
                position = group.committed or 0
            elif step == "crash":
                forwarder, position, returned = group.forwarder(), group.committed or 0, None
                forwarder.sources.seek = seek
        # Then no more trouble, and records keep coming: a gap shows when a record past it is
        # fetched, and the consumer goes back over it.
        for _ in range(100):
            end += 1
            await fetch(end, end)
            if forwarder.expected.get(tp) == end:
                break
        return end

    with mock.patch("streamapp.gaps.time.monotonic", lambda: float(next(clock))):
        last = asyncio.run(run())
    first_copies = list(dict.fromkeys(group.copied()))
    assert first_copies == list(range(last))


SIGNER = Signer(Secret(TEST_SIGNING_KEY), app="streamapp")


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


def test_a_partition_says_so_when_its_log_lacks_copies(caplog: pytest.LogCaptureFixture) -> None:
    s = state()
    s.apply(0, Copy("events", 5, Event("a", {"f": 1.0}, None, None)))
    s.apply(1, Copy("events", 9, Event("b", {"f": 1.0}, None, None)))
    assert "partition 0: the sequence topic has no copy of events offsets 6..8" in caplog.text
    assert s.source_offsets == {"events": 9} and s.events_seen == 2


def test_a_record_over_the_size_limit_or_without_a_value_is_copied_as_its_refusal() -> None:
    """Its copy might not fit the sequence topic (one record stopped every worker it reached),
    or aiokafka would not send it: the copy carries the reason, and the partition refuses it
    with that reason, as the events topic's own reader would."""
    group = Group(committed=0)
    big = ConsumerRecord("events", 2, 0, 1, 0, b"card", b"x" * 101, None, 0, 0, [("trace", b"1")])
    empty = ConsumerRecord("events", 2, 1, 1, 0, None, None, None, 0, 0, [])
    batch = [big, empty, ConsumerRecord("events", 2, 2, 1, 0, b"card", b"y" * 100, None, 0, 0, [])]
    assert asyncio.run(group.forwarder().forward(TP("events", 2), batch, lambda: True)) == 2
    (_, k0, v0, _, _, h0), (_, k1, v1, _, _, h1), (_, k2, v2, _, _, h2) = group.sent
    assert (k0, v0, k1, v1) == (None, b"", None, b"") and (k2, v2) == (b"card", b"y" * 100)
    too_big = "oversized: 101 bytes > limit 100 (STREAMAPP_MAX_EVENT_BYTES)"
    assert dict(h0)[sequence.REFUSED] == too_big.encode() and dict(h1)[sequence.REFUSED] == NO_VALUE.encode()
    assert sequence.REFUSED not in dict(h2) and ("trace", b"1") not in h0
    settings = Settings.from_env(
        {"STREAMAPP_LABELS_TOPIC": "labels", "STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY}
    )
    reader = RecordReader(settings, Decoder.from_settings(settings, Limits(max_event_bytes=100)), SIGNER)
    copies = [
        ConsumerRecord("app-sequence", 2, n, 1, 0, key, value, None, 0, 0, headers)
        for n, (_, key, value, _, _, headers) in enumerate(group.sent)
    ]
    read = [reader.read(TP("app-sequence", 2), copy, 0.0) for copy in copies]
    assert read[:2] == [Copy("events", 0, Refused(too_big)), Copy("events", 1, Refused(NO_VALUE))]
    assert isinstance(read[2], Copy) and isinstance(read[2].message, Refused)  # "not JSON", from the record


def test_a_forged_refusal_is_dropped_with_the_other_headers_of_ours() -> None:
    group = Group(committed=0)
    batch = [record(0, b"{}", [(sequence.REFUSED, b"forged")])]
    asyncio.run(group.forwarder().forward(TP("labels", 2), batch, lambda: True))
    assert sequence.REFUSED not in dict(group.sent[0][5])


@settings(max_examples=300, deadline=None)
@given(
    key=st.none() | st.binary(max_size=150),
    value=st.none()
    | st.binary(max_size=150)
    | st.sampled_from([b'{"id": "a", "x": {"f": 1.0}, "y": true}', b'{"id": "a", "y": false}', b"{}"]),
    headers=st.lists(st.tuples(st.sampled_from(["trace", sequence.REFUSED, sequence.ORIGIN]), st.binary())),
)
def test_a_copy_is_refused_or_read_exactly_as_its_record_on_the_events_topic(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    """Whatever a record holds (no key, no value, any size, headers of ours forged), copying it
    never raises, and its partition reads the copy as the events topic's reader reads the record:
    the same message, or the same refusal."""
    group = Group(committed=0)
    original = ConsumerRecord("events", 2, 0, 1, 0, key, value, None, 0, 0, headers)
    assert asyncio.run(group.forwarder().forward(TP("events", 2), [original], lambda: True)) == 0
    (_, copy_key, copy_value, _, _, copy_headers) = group.sent[0]
    assert copy_key is not None or copy_value is not None, "aiokafka sends it"
    copy = ConsumerRecord("app-sequence", 2, 0, 1, 0, copy_key, copy_value, None, 0, 0, copy_headers)
    limits = Limits(max_event_bytes=100)
    plain = Settings.from_env({"STREAMAPP_SIGNING_KEY": "k" * 32})
    merged = Settings.from_env({"STREAMAPP_LABELS_TOPIC": "labels", "STREAMAPP_SIGNING_KEY": "k" * 32})
    as_event = RecordReader(plain, Decoder.from_settings(plain, limits), SIGNER).read(
        TP("events", 2), original, 0.0
    )
    as_copy = RecordReader(merged, Decoder.from_settings(merged, limits), SIGNER).read(TP("s", 2), copy, 0.0)
    assert as_copy == Copy("events", 0, as_event)


def test_a_key_and_headers_over_the_limit_are_refused_on_either_route() -> None:
    """Every output of a record carries its key (and a copy its headers): a 1 MB key would not
    fit an output topic of the broker's default limit."""
    group = Group(committed=0)
    original = ConsumerRecord("events", 2, 0, 1, 0, b"k" * 90, b"{}", None, 0, 0, [("trace", b"x" * 6)])
    asyncio.run(group.forwarder().forward(TP("events", 2), [original], lambda: True))
    reason = "oversized key and headers: 101 bytes > limit 100 (STREAMAPP_MAX_EVENT_BYTES)"
    assert dict(group.sent[0][5])[sequence.REFUSED] == reason.encode() and group.sent[0][1] is None
    plain = Settings.from_env({"STREAMAPP_SIGNING_KEY": "k" * 32})
    reader = RecordReader(plain, Decoder.from_settings(plain, Limits(max_event_bytes=100)), SIGNER)
    assert reader.read(TP("events", 2), original, 0.0) == Refused(reason)
