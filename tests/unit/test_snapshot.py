"""A snapshot restores a partition exactly; a bad one is refused before pickle sees it."""

from __future__ import annotations

import itertools

import pytest

from streamapp import datasets, models, producer, snapshot
from streamapp.state import PartitionState, snapshot_spread
from tests.unit.test_state import feed


def test_restored_state_continues_exactly_like_the_original() -> None:
    spec = models.resolve("adaptive_random_forest")
    msgs = list(producer.messages(datasets.load("card", limit=1500), label_delay=10))
    original = PartitionState(3, spec, pending_max=100)
    feed(original, msgs[:1000])
    blob = snapshot.encode(original, max_bytes=50_000_000)
    header, restored = snapshot.decode(blob)
    assert (header.partition, header.offset, header.seq) == (3, 999, 1)
    assert restored.pending == original.pending  # waiting events travel with the model
    tail_original = feed(original, msgs[1000:], start=1000)
    tail_restored = feed(restored, msgs[1000:], start=1000)
    assert tail_restored == tail_original
    assert restored.metrics.values() == original.metrics.values()


def test_header_is_readable_without_unpickling() -> None:
    state = PartitionState(1, models.resolve("hoeffding_tree"), pending_max=0)
    feed(state, producer.messages(datasets.load("phishing", limit=10)))
    header = snapshot.read_header(snapshot.encode(state, max_bytes=10_000_000))
    assert header.offset == 9
    assert header.model == "hoeffding_tree"
    assert header.payload_bytes > 0


def test_corrupt_and_foreign_values_are_refused() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), pending_max=0)
    blob = snapshot.encode(state, max_bytes=10_000_000)
    with pytest.raises(snapshot.SnapshotError, match="digest mismatch"):
        snapshot.decode(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(snapshot.SnapshotError, match="digest mismatch"):
        snapshot.decode(blob[:-10])
    with pytest.raises(snapshot.SnapshotError, match="bad magic"):
        snapshot.decode(b"\x80\x04pickle")


def test_oversized_snapshot_is_a_clear_error() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), pending_max=0)
    with pytest.raises(snapshot.SnapshotError, match=r"over the limit of 100 .*STREAMAPP_MAX_SNAPSHOT_BYTES"):
        snapshot.encode(state, max_bytes=100)


def test_snapshot_schedule_by_count_and_by_age() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), pending_max=0)
    assert not state.snapshot_due(every_events=3, every_seconds=60, now=1000.0)  # nothing applied yet
    state.snapshot_taken(10, now=1000.0)
    state.advance(0)
    assert not state.snapshot_due(every_events=3, every_seconds=60, now=1001.0)
    assert state.snapshot_due(every_events=3, every_seconds=60, now=1076.0)  # 60 s x 1.25 at most
    state.advance(1)
    state.advance(2)
    assert state.snapshot_due(every_events=3, every_seconds=60, now=1001.0)


def test_snapshot_intervals_are_spread_over_partitions_and_snapshots() -> None:
    """Partitions fed at one rate must not all snapshot in the same fetched batch."""
    factors = [snapshot_spread(p, seq) for p in range(64) for seq in range(20)]
    assert all(0.75 <= f < 1.25 for f in factors)
    assert sum(factors) / len(factors) == pytest.approx(1.0, abs=0.02)  # the mean interval holds
    first = sorted(snapshot_spread(p, 0) for p in range(8))
    assert min(b - a for a, b in itertools.pairwise(first)) > 0.03
    assert len({round(snapshot_spread(3, seq), 6) for seq in range(8)}) == 8
