"""Changes of a partition's champion: promotions (by request or by rule) and rollbacks.

Each is a control event in the partition's log, or a deterministic function of it, so a replay
repeats them; each leaves an entry in the partition's audit trail (`changes`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from streamapp.contenders import better_by
from streamapp.records import BadEvent, Control

if TYPE_CHECKING:
    from streamapp.partition import PartitionState, SnapshotSource

log = logging.getLogger(__name__)

KEEP_CHANGES = 20  # promotions and rollbacks kept in the partition's audit trail
KEEP_CONTROL_IDS = 1000  # ids of applied control events: a copy of one is refused


class Unavailable(Exception):
    """A snapshot a rollback asks for cannot be had; str(self) says why."""


def _audit(state: PartitionState, offset: int, request: str, outcome: str) -> str:
    record = {"offset": offset, "request": request, "outcome": outcome, "time": time.time()}
    state.changes = [*state.changes[-(KEEP_CHANGES - 1) :], record]
    return outcome


def apply_control(
    state: PartitionState, control: Control, offset: int, at: float, snapshots: SnapshotSource
) -> tuple[str, bool]:
    """A promotion or rollback read from the partition's log (its signature checked), once: a
    copy of a signed one is refused by its id. The outcome, and whether the models changed."""
    if control.id in state.control_ids:
        raise BadEvent(f"control event {control.id!r} was applied already (a copy is refused)")
    state.control_ids = [*state.control_ids[-(KEEP_CONTROL_IDS - 1) :], control.id]
    rollbacks = state.rollbacks
    if control.action == "promote":
        assert control.model is not None
        outcome = promote(state, control.model, offset)
    elif wait := state.rollback_wait(at):
        why = f"rate-limited: next rollback allowed in {wait:.0f} s (STREAMAPP_ROLLBACK_MIN_INTERVAL)"
        outcome = refuse(state, offset, control.describe(), why)
    else:
        assert control.seq is not None
        try:
            older = snapshots(state.partition, control.seq)
        except Unavailable as exc:
            outcome = refuse(state, offset, control.describe(), str(exc))
        else:
            outcome = roll_back(state, older, control.seq, offset, at)
    return outcome, state.rollbacks != rollbacks


def promote(state: PartitionState, name: str, offset: int) -> str:
    """A promotion requested by the control event at `offset`; the outcome."""
    names = state.names()
    request = f"promote {name}"
    if name not in names:
        outcome = f"refused: no model {name!r} on this partition (models: {', '.join(names)})"
    elif names.index(name) == state.champion_index:
        outcome = f"unchanged: {name!r} is already the champion"
    else:
        return _promote(state, names.index(name), offset, request)
    return _audit(state, offset, request, outcome)


def _promote(state: PartitionState, index: int, offset: int, request: str) -> str:
    old, new = state.champion.name, state.contenders[index].name
    state.champion_index = index
    state.labels_since_promotion = 0
    outcome = f"promoted {new!r} over {old!r}"
    log.warning("partition %d: %s at offset %d (%s)", state.partition, outcome.upper(), offset, request)
    return _audit(state, offset, request, outcome)


def promote_by_rule(state: PartitionState, offset: int) -> None:
    """The challenger ahead of the champion by the widest margin over the last N labels takes
    over; the next rule promotion waits for N more labels, so the windows hold only labels seen
    under the new champion."""
    window = state.config.promote_after
    if state.labels_since_promotion < window:
        return
    champion = state.champion
    margin = state.config.promote_margin
    gains = [
        (gain, i)
        for i, c in enumerate(state.contenders)
        if i != state.champion_index and (gain := better_by(c, champion, margin)) is not None
    ]
    if gains:
        gain, winner = max(gains)
        rule = f"rule: {champion.rolling_name} better by {gain:.4f} over the last {window} labels"
        _promote(state, winner, offset, rule)


def rollback_wait(state: PartitionState, at: float) -> float:
    """Seconds until a rollback is allowed at `at` (0: now): each forces a full snapshot over a
    kept one (record time in the log, so a replay decides alike; wall clock in the web views,
    which answer 429)."""
    interval = state.config.rollback_min_interval
    if not interval or not state.last_rollback_at:
        return 0.0
    return max(0.0, state.last_rollback_at + interval - at)


def roll_back(state: PartitionState, older: PartitionState, seq: int, offset: int, at: float = 0.0) -> str:
    """The models (with their metrics, drift detectors and champion) become those of snapshot
    #`seq`; the position in the log, the counters and the waiting events stay."""
    if older.names() != state.names():
        outcome = (
            f"refused: snapshot #{seq} holds models {older.names()}, this partition runs {state.names()}"
        )
    else:
        state.contenders = older.contenders
        state.champion_index = older.champion_index
        state.labels_since_promotion = older.labels_since_promotion
        state.rollbacks += 1
        state.last_rollback_at = at
        outcome = f"rolled back to snapshot #{seq} (offset {older.offset})"
        log.warning("partition %d: ROLLED BACK to snapshot #%d at offset %d", state.partition, seq, offset)
    return _audit(state, offset, f"rollback {seq}", outcome)


def refuse(state: PartitionState, offset: int, request: str, why: str) -> str:
    """A control event that cannot apply (e.g. its snapshot is gone): audited, skipped."""
    return _audit(state, offset, request, f"refused: {why}")
