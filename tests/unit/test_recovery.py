"""The rewind decisions of recovery, against a consumer that records what it is told."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from faust.types import TP

from streamapp import models
from streamapp.partition import PartitionConfig, PartitionState
from streamapp.recovery import RecoveryError, resume_at_model_offsets

TOPIC = "events"


class FakeConsumer:
    def __init__(
        self,
        committed: dict[int, int | None],
        earliest: dict[int, int],
        commit_ok: bool = True,
        ends: dict[int, int] | None = None,
    ) -> None:
        self.committed = {TP(TOPIC, p): o for p, o in committed.items()}
        self.earliest = {TP(TOPIC, p): o for p, o in earliest.items()}
        self.ends = {TP(TOPIC, p): o for p, o in (ends or {}).items()}
        self.commit_ok = commit_ok
        self.commits: dict[int, int] = {}
        self.seeks: dict[int, int] = {}

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        return self.committed

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.earliest[tp] for tp in partitions}

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.ends.get(tp, 10**9) for tp in partitions}

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.update({tp.partition: o for tp, o in offsets.items()})
        return self.commit_ok

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.update({tp.partition: o for tp, o in partitions.items()})


class FakeLearner:
    def __init__(self, states: dict[int, tuple[PartitionState, str]]) -> None:
        self.states = states

    def state_for_recovery(self, partition: int) -> tuple[PartitionState, str]:
        return self.states[partition]

    def new_state(self, partition: int) -> PartitionState:
        self.states[partition] = (state_at(-1), "new")
        return self.states[partition][0]


def state_at(offset: int) -> PartitionState:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    state.offset = offset
    return state


async def test_each_partition_resumes_right_after_its_model() -> None:
    new, snap, ahead = state_at(-1), state_at(41), state_at(120)
    processor = FakeLearner({0: (new, "new"), 1: (snap, "snapshot"), 2: (ahead, "memory")})
    consumer = FakeConsumer(committed={0: None, 1: 100, 2: 100}, earliest={0: 0, 1: 0, 2: 0})
    plan = await resume_at_model_offsets(processor, consumer, [TP(TOPIC, p) for p in (0, 1, 2)])
    assert plan == {0: (None, 0), 1: (100, 42), 2: (100, 121)}
    assert consumer.commits == {0: 0, 1: 42, 2: 121}, "the group's offsets follow the models"
    assert consumer.seeks == {0: 0, 1: 42, 2: 121}, "every partition is positioned explicitly"
    assert snap.runtime.replay_until == 100 and snap.runtime.recovered_from == "snapshot"
    assert new.admit(5) == "gap", "a positioned new model expects its first offset"


async def test_events_lost_to_retention_are_counted_and_skipped() -> None:
    state = state_at(10)
    consumer = FakeConsumer(committed={0: 80}, earliest={0: 50})
    plan = await resume_at_model_offsets(FakeLearner({0: (state, "snapshot")}), consumer, [TP(TOPIC, 0)])
    assert plan == {0: (80, 50)}
    assert state.events_lost_to_retention == 39
    assert state.offset == 49


async def test_a_new_model_starts_where_the_log_starts_without_alarm() -> None:
    state = state_at(-1)
    consumer = FakeConsumer(committed={0: None}, earliest={0: 500})
    plan = await resume_at_model_offsets(FakeLearner({0: (state, "new")}), consumer, [TP(TOPIC, 0)])
    assert plan == {0: (None, 500)}
    assert state.events_lost_to_retention == 0


async def test_a_snapshot_ahead_of_the_log_is_replaced_by_a_new_model() -> None:
    processor = FakeLearner({0: (state_at(3895), "snapshot")})
    consumer = FakeConsumer(committed={0: None}, earliest={0: 0}, ends={0: 120})
    plan = await resume_at_model_offsets(processor, consumer, [TP(TOPIC, 0)])
    assert plan == {0: (None, 0)}
    assert processor.states[0][0].offset == -1


async def test_a_failed_commit_stops_recovery() -> None:
    consumer = FakeConsumer(committed={0: 80}, earliest={0: 0}, commit_ok=False)
    with pytest.raises(RecoveryError):
        await resume_at_model_offsets(FakeLearner({0: (state_at(3), "snapshot")}), consumer, [TP(TOPIC, 0)])


def test_the_faust_consumer_still_has_what_recovery_calls() -> None:
    """Recovery uses a private method of Faust's consumer: a Faust upgrade must keep it."""
    from faust.transport.drivers.aiokafka import Consumer

    for name in ("_commit", "seek_to_committed", "earliest_offsets", "seek_wait", "pause_partitions"):
        assert callable(getattr(Consumer, name, None)), name


async def test_a_held_partition_is_moved_to_its_model_but_its_committed_offset_is_read_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """exactly_once: after Faust's seek to the committed offsets, a held partition goes back to
    its model's position; the committed offset recovery reads stays the group's (when a held
    partition's model position came back instead, a back-to-back rebalance rewound the
    transactions' committed offset and outputs were written twice)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streamapp.application import create_app
    from streamapp.consumer import BatchConsumer
    from streamapp.settings import Settings
    from tests import TEST_SIGNING_KEY

    tp = TP(TOPIC, 0)

    async def committed(self: object) -> dict[TP, int]:
        return {tp: 931}

    monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", committed)
    app = create_app(Settings.from_env({"STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY}))
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    seeks: list[Mapping[TP, int]] = []

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        seeks.append(partitions)

    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    app.model_positions = lambda tps: {t: 562 for t in tps}  # type: ignore[attr-defined]
    consumer.held = {tp}
    assert await consumer.seek_to_committed() == {tp: 931}
    assert seeks == [{tp: 562}]
