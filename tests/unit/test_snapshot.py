"""A snapshot restores a partition exactly; a bad one is refused before pickle sees it."""

from __future__ import annotations

import hashlib
import itertools
import pickle

import orjson
import pytest
import river

from streamapp import datasets, models, producer, snapshot
from streamapp.agent import Learner, snapshot_key
from streamapp.settings import Settings
from streamapp.signing import Signer
from streamapp.state import PartitionState, snapshot_spread
from tests import TEST_SIGNING_KEY
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


def learner_over(table: dict[str, bytes], **settings: str) -> Learner:
    """A learner whose snapshot table is `table` (only recovery and rollback are exercised)."""

    async def nothing(*args: object) -> None:
        return None

    env = {
        "STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY,
        **{f"STREAMAPP_{k.upper()}": v for k, v in settings.items()},
    }
    config = Settings.from_env(env)
    spec = models.resolve(config.model)
    challengers = models.resolve_challengers(config.challengers, spec)

    def save(tp: object, key: str, blob: bytes) -> None:
        table[key] = blob

    signer = Signer.from_settings(config)
    return Learner(config, spec, challengers, table, save, nothing, nothing, nothing, nothing, signer)  # type: ignore[arg-type]


def test_the_last_k_snapshots_are_kept_and_recovery_takes_the_newest_that_decodes() -> None:
    table: dict[str, bytes] = {}
    learner = learner_over(table, snapshots_kept="3")
    state = learner.new_state(0)
    msgs = list(producer.messages(datasets.load("phishing", limit=500)))
    for n in range(5):  # five snapshots, 100 events apart: the last three are kept
        feed(state, msgs[n * 100 : (n + 1) * 100], start=n * 100)
        table[snapshot_key(0, state.snapshot_seq + 1, 3)] = blob = snapshot.encode(state, 10_000_000)
        state.snapshot_taken(len(blob), 0.0)
    kept = learner.kept_snapshots(0)
    assert [(h.seq, h.offset) for h, _ in kept] == [(5, 499), (4, 399), (3, 299)]

    learner.states.clear()
    restored, source = learner.state_for_recovery(0)
    assert (source, restored.offset, restored.snapshot_seq) == ("snapshot", 499, 5)

    newest = snapshot_key(0, 5, 3)
    table[newest] = table[newest][:-10] + b"0123456789"  # damaged: the one before it is used
    learner.states.clear()
    restored, source = learner.state_for_recovery(0)
    assert (source, restored.offset, restored.snapshot_seq) == ("snapshot", 399, 4)


def test_a_snapshot_from_before_challengers_is_restored_and_joined_by_them() -> None:
    """Snapshots pickled before champions and challengers held the model, metrics and drift
    detector on the state itself; such a state is restored as the champion, and a challenger
    configured since then joins at its offset."""
    spec = models.resolve("hoeffding_tree")
    state = PartitionState(0, spec, pending_max=10)
    stream = list(producer.messages(datasets.load("phishing", limit=400), label_delay=5))
    msgs, tail = stream[:601], stream[601:]
    feed(state, msgs)
    assert len(state.pending) == 5
    champion = state.contenders[0]
    legacy = state.__dict__
    del legacy["contenders"]
    legacy.update(
        model=champion.model,
        metrics=champion.metrics,
        drift=champion.drift,
        model_name="hoeffding_tree",
        model_class="HoeffdingTreeClassifier",
        model_resets=0,
        _class_from_proba=True,
    )
    legacy["pending"] = type(state.pending)((k, (x, p[0])) for k, (x, p, _) in state.pending.items())
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = orjson.dumps(
        {
            "format": snapshot.FORMAT,
            "partition": 0,
            "offset": state.offset,
            "seq": 1,
            "created": 0.0,
            "model": "hoeffding_tree",
            "river": river.__version__,
            "python": "3.11",
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
    )  # the header of that time: no "models"
    blob = snapshot.MAGIC + len(header).to_bytes(4, "big") + header + payload
    table = {"p0": blob}  # the one key of the old layout

    learner = learner_over(table, challengers="naive_bayes")
    restored, source = learner.state_for_recovery(0)
    assert source == "snapshot"
    assert restored.names() == ["hoeffding_tree", "naive_bayes"] and restored.model_name == "hoeffding_tree"
    assert restored.metrics.values() == champion.metrics.values()
    assert restored.contenders[1].learned == 0
    feed(restored, tail, start=len(msgs))  # the late labels of the waiting events still apply
    assert restored.labels_unknown == 0 and restored.labels_late == 400
    assert restored.contenders[1].labels == restored.contenders[1].learned - 5  # 5 had no prediction
