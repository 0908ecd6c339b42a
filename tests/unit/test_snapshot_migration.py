"""A format-2 snapshot (written by the code of commit 3070cfa, before the partition state was
split into learning, configuration and ownership) loads as today's state and continues exactly
as a state that never left memory.

tests/unit/data/format2-partition0.snapshot: partition 0, hoeffding_tree champion with a
logistic_regression challenger (promotion rule over 100 labels, which promoted it at offset
606), 200 events waiting at most; the first 1000 messages of the card stream (1500 events,
labels 40 events late), each applied at record time = its offset, then an explicit request to
promote logistic_regression (unchanged). Signed with tests.TEST_SIGNING_KEY.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp import changes, datasets, models, producer, records, snapshot
from streamapp.partition import DeadLetter, Gap, PartitionConfig, PartitionState, Poisoned, Scored
from streamapp.settings import Secret
from streamapp.signing import Signer
from tests import TEST_SIGNING_KEY

FIXTURE = Path(__file__).parent / "data" / "format2-partition0.snapshot"
SIGNER = Signer(Secret(TEST_SIGNING_KEY), app="streamapp")
CONFIG = PartitionConfig(pending_max=200, promote_after=100)
CUT = 1000


def specs() -> list[models.ModelSpec]:
    champion = models.resolve("hoeffding_tree")
    return [champion, *models.resolve_challengers(("logistic_regression",), champion)]


def messages() -> list[bytes]:
    return [value for _, value in producer.messages(datasets.load("card", limit=1500), label_delay=40)]


def feed(state: PartitionState, values: list[bytes], start: int) -> list[dict[str, object]]:
    predictions = []
    for offset, value in enumerate(values, start=start):
        outcome = state.apply(offset, records.parse(value), float(offset))
        assert not isinstance(outcome, DeadLetter | Gap | Poisoned), outcome
        if isinstance(outcome, Scored):
            predictions.append({**outcome.prediction, "model": outcome.version["name"]})
    return predictions


@pytest.fixture(scope="module")
def twin() -> PartitionState:
    """The same stream applied by today's code, never snapshotted."""
    champion, *challengers = specs()
    state = PartitionState(0, champion, CONFIG, challengers)
    feed(state, messages()[:CUT], 0)
    changes.promote(state, "logistic_regression", CUT - 1)
    return state


def migrated() -> PartitionState:
    header, state = snapshot.decode(FIXTURE.read_bytes(), SIGNER, 0)
    assert (header.format, header.offset) == (2, CUT - 1)
    assert header.models == ["logistic_regression", "hoeffding_tree"]
    state.configure(CONFIG, specs())
    return state


def test_a_format_2_snapshot_holds_what_the_state_learned(twin: PartitionState) -> None:
    state = migrated()
    assert (state.offset, state.first_offset, state.task.name) == (twin.offset, 0, "binary")
    assert state.names() == twin.names() and state.champion.name == "logistic_regression"
    assert [c.metrics.values() for c in state.contenders] == [c.metrics.values() for c in twin.contenders]
    counters = ("events_seen", "events_learned", "labels_late", "labels_unknown", "labels_since_promotion")
    assert {n: getattr(state, n) for n in counters} == {n: getattr(twin, n) for n in counters}
    assert state.waiting.events == twin.waiting.events and len(state.waiting) == 40
    assert (state.waiting.bytes, state.waiting.evicted) == (twin.waiting.bytes, twin.waiting.evicted)
    assert vars(state.schema) == vars(twin.schema)
    outcomes = [(c["offset"], c["request"], c["outcome"]) for c in state.changes]
    assert outcomes == [(c["offset"], c["request"], c["outcome"]) for c in twin.changes]
    assert len(outcomes) == 2  # the rule's promotion, then the request that found it done


def test_a_migrated_state_continues_exactly_like_one_never_snapshotted(twin: PartitionState) -> None:
    state, tail = migrated(), messages()[CUT:]
    assert feed(state, tail, CUT) == feed(twin, tail, CUT)
    assert [c.metrics.values() for c in state.contenders] == [c.metrics.values() for c in twin.contenders]
    assert state.events_learned == twin.events_learned == 1500


def test_a_migrated_state_is_written_back_in_format_3() -> None:
    state = migrated()
    blob = snapshot.encode(state, 10_000_000, SIGNER)
    header, again = snapshot.decode(blob, SIGNER, 0)
    assert blob.startswith(snapshot.MAGIC) and header.format == snapshot.FORMAT == 3
    assert again.waiting.events == state.waiting.events and again.names() == state.names()
    old_fields = ("pending", "feature_kinds", "pending_max", "drift_policy")
    assert not any(name in vars(again) for name in old_fields)


def test_a_format_2_snapshot_is_verified_before_anything_is_unpickled() -> None:
    blob = FIXTURE.read_bytes()
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob[:-1] + bytes([blob[-1] ^ 1]), SIGNER, 0)
    with pytest.raises(snapshot.SnapshotRefused, match="not 1"):
        snapshot.decode(blob, SIGNER, 1)
