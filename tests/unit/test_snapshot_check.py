"""`streamapp snapshots check` (streamapp/snapshot_check.py) on snapshot tables built here: what a
worker of this version restores from each partition's kept snapshots, and the verdict on it."""

from __future__ import annotations

import orjson
import pytest
import river
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp import models, snapshot
from streamapp.partition import PartitionConfig, PartitionState
from streamapp.settings import Settings
from streamapp.snapshot_check import KEEPS, LOSES, REPLAYS, Kept, Verdict, kept_of
from streamapp.snapshot_store import MemoryTable, SnapshotStore
from tests import TEST_SIGNING_KEY

OTHER_KEY = "another-signing-key-0123456789abcdefghij"


def store(table: MemoryTable, **settings: str) -> SnapshotStore:
    env = {"STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY, "STREAMAPP_SNAPSHOTS_KEPT": "3"}
    env.update({f"STREAMAPP_{k.upper()}": v for k, v in settings.items()})
    return SnapshotStore.from_settings(Settings.from_env(env), table)


def written(partition: int, offsets: list[int], **settings: str) -> MemoryTable:
    """A table with a snapshot of the partition at each offset, in order."""
    table = MemoryTable()
    writer = store(table, **settings)
    spec = models.resolve(settings.get("model", "hoeffding_tree"))
    state = PartitionState(partition, spec, PartitionConfig(100))
    for offset in offsets:
        state.offset = offset
        writer.take(state, 0.0)
    return table


def test_the_newest_snapshot_that_loads_is_restored() -> None:
    table = written(1, [10, 20, 30, 40])
    kept = kept_of(store(table), 1)
    assert [(k.seq, k.offset, k.refused) for k in kept] == [(4, 40, None), (3, 30, None), (2, 20, None)]
    verdict = Verdict(1, kept, log_start=0, log_end=55)
    assert (verdict.status, verdict.restored, verdict.replay_from) == (KEEPS, kept[0], 41)
    assert "restores #4 (offset 40), then replays 14 events from offset 41" in verdict.describe()


def test_a_corrupt_newest_snapshot_falls_back_to_an_older_one_and_says_why() -> None:
    table = written(0, [10, 20])
    slot = next(key for key, blob in table.items() if snapshot.read_header(blob).seq == 2)
    table[slot] = table[slot][:-1] + bytes([table[slot][-1] ^ 1])  # one bit of its payload
    kept = kept_of(store(table), 0)
    assert kept[0].seq == 2 and "signature" in (kept[0].refused or "")
    verdict = Verdict(0, kept, log_start=0, log_end=30)
    assert (verdict.status, verdict.restored, verdict.replay_from) == (REPLAYS, kept[1], 11)


def test_other_models_or_another_key_mean_a_new_model() -> None:
    table = written(2, [5])
    (other_model,) = kept_of(store(table, model="naive_bayes"), 2)
    assert "none of them configured" in (other_model.refused or "")
    (other_key,) = kept_of(store(table, signing_key=OTHER_KEY), 2)
    assert "signature" in (other_key.refused or "")
    assert Verdict(2, (other_key,), 0, 9).status == REPLAYS


@pytest.mark.parametrize(
    ("kept", "log_start", "status", "replay_from"),
    [
        ((), 0, KEEPS, 0),  # never snapshotted: the log from its start, as now
        ((), 5, LOSES, 0),  # ...but retention deleted its first events
        ((Kept(3, 99, "0.26.1", None),), 100, KEEPS, 100),  # the snapshot covers what was deleted
        ((Kept(3, 99, "0.26.1", None),), 101, LOSES, 100),  # one event deleted before it is learned
        ((Kept(3, 99, "0.26.1", "River"), Kept(2, 50, "0.26.1", None)), 51, REPLAYS, 51),
        ((Kept(3, 99, "0.26.1", "River"), Kept(2, 50, "0.26.1", None)), 52, LOSES, 51),
    ],
)
def test_the_verdict_compares_where_the_replay_starts_with_where_the_log_starts(
    kept: tuple[Kept, ...], log_start: int, status: int, replay_from: int
) -> None:
    verdict = Verdict(0, kept, log_start, log_end=200)
    assert (verdict.status, verdict.replay_from) == (status, replay_from)
    assert verdict.as_dict()["events_to_replay"] == 200 - replay_from
    if status == LOSES:
        assert f"retention deleted {log_start - replay_from} of them" in verdict.describe()


def forged(header: object) -> bytes:
    """A snapshot with streamapp's magic and any JSON for its header, and no valid signature."""
    head = orjson.dumps(header)
    return snapshot.MAGIC + len(head).to_bytes(4, "big") + head + bytes(32) + b"payload"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
HEADER_KEYS = ("format", "partition", "offset", "seq", "created", "model", "river", "python",
               "payload_bytes", "models")  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blobs=st.lists(
        st.binary(max_size=64)
        | st.builds(forged, st.fixed_dictionaries({k: json_values for k in HEADER_KEYS}))
        | st.builds(  # format 3 itself: a header past the format check, its other fields anything
            forged,
            st.fixed_dictionaries({k: st.just(3) if k == "format" else json_values for k in HEADER_KEYS}),
        )
        | st.builds(forged, json_values),
        min_size=1,
        max_size=2,
    )
)
def test_anything_in_the_changelog_is_listed_as_refused_never_a_crash(blobs: list[bytes]) -> None:
    """The changelog topic is writable by whoever holds its ACL: the check lists what it finds,
    with the reason, and only a snapshot that verifies is restored."""
    table = written(0, [7])  # snapshot #1, in slot 1 of 3
    table.update({f"p0/{slot}": blob for slot, blob in zip((0, 2), blobs, strict=False)})
    kept = kept_of(store(table), 0)
    assert len(kept) == 1 + len(blobs)
    assert [k for k in kept if k.refused is None] == [Kept(1, 7, river.__version__, None)]
    assert all(isinstance(k.seq, int) and isinstance(k.offset, int) for k in kept)
    verdict = Verdict(0, kept, log_start=0, log_end=20)
    assert verdict.replay_from == 8 and verdict.status in (KEEPS, REPLAYS)
    assert orjson.dumps(verdict.as_dict()) and verdict.describe()
