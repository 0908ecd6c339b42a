"""Control events apply only when the web views signed them, for this partition, once, in time."""

from __future__ import annotations

import orjson

from streamapp import control
from streamapp.records import Control
from tests.processor_harness import Harness

NOW = 1_800_000_000.0


def promote(harness: Harness, control_id: str, partition: int = 0, expires: float = NOW + 300) -> tuple:
    value = orjson.dumps({"id": control_id, "control": "promote", "model": "logistic_regression"})
    signed = Control(control_id, "promote", model="logistic_regression")
    return value, control.sign(harness.processor.signer, partition, signed, int(expires))


def test_only_a_signed_fresh_control_event_of_this_partition_applies_and_only_once() -> None:
    harness = Harness.build(challengers="logistic_regression")
    good = promote(harness, "c1")
    unsigned = (good[0], [])
    other_partition = promote(harness, "c2", partition=1)
    expired = promote(harness, "c3", expires=NOW - 1)
    altered = (good[0].replace(b"logistic_regression", b"hoeffding_tree"), good[1])
    sent = [unsigned, other_partition, expired, altered, good, good]
    harness.feed([v for v, _ in sent], [h for _, h in sent], at=NOW)
    reasons = dict(harness.deadletters)
    assert "unsigned control event" in reasons[0]
    assert "invalid signature" in reasons[1] and "invalid signature" in reasons[3]
    assert "expired control event" in reasons[2]
    assert "was applied already" in reasons[5]
    assert 4 not in reasons
    state = harness.state
    assert state.champion.name == "logistic_regression"
    assert [c["offset"] for c in state.changes] == [4]


def test_a_signature_from_the_previous_key_still_verifies_during_a_rotation() -> None:
    old = Harness.build()
    value, headers = promote(old, "c1")
    rotated = Harness.build(
        signing_key="a-brand-new-signing-key-0123456789abcdef",
        signing_key_previous=old.processor.settings.signing_key.reveal(),
    )
    rotated.feed([value], [headers], at=NOW)
    assert not rotated.deadletters
    assert rotated.state.changes[0]["outcome"].startswith("refused: no model")  # applied, not forged
