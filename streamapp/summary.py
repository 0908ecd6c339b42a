"""A partition as the web views and /models show it: a JSON-ready view of its state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamapp.partition import PartitionState


def model_version(state: PartitionState) -> dict[str, Any]:
    """Which model makes a prediction now: replaying the partition to its offset reproduces it."""
    champion = state.champion
    return {
        "name": champion.name,
        "snapshot_seq": state.runtime.snapshot_seq,
        "learned": champion.learned,
        "resets": champion.resets,
        "rollbacks": state.rollbacks,
    }


def summarize(state: PartitionState, now: float) -> dict[str, Any]:
    config, runtime, champion = state.config, state.runtime, state.champion
    return {
        "partition": state.partition,
        "model": champion.name,
        "model_class": champion.model_class,
        "task": state.task.name,
        "offset_applied": state.offset,
        "events_seen": state.events_seen,
        "events_learned": state.events_learned,
        "labels_late": state.labels_late,
        "labels_unknown": state.labels_unknown,
        "pending_labels": len(state.waiting),
        "pending_bytes": state.waiting.bytes,
        "pending_evicted": state.waiting.evicted,
        "pending_expired": state.waiting.expired,
        "deadletters": state.deadletters,
        "model_errors": state.model_errors,
        "gaps": state.gaps,
        "replays_skipped": state.replays_skipped,
        "duplicates": state.duplicates,
        "sources": dict(state.source_offsets),
        "events_replayed": runtime.events_replayed,
        "events_lost_to_retention": state.events_lost_to_retention,
        "recovery": {
            "time": runtime.recovered_at or None,
            "from": runtime.recovered_from or None,
            "committed": runtime.recovery_committed,
            "replay_until": runtime.replay_until,
        },
        "metrics": champion.metrics.values(),
        "drift": {**champion.drift.summary(), "policy": config.drift_policy, "model_resets": champion.resets},
        "models": [
            {**c.summary(), "role": "champion" if i == state.champion_index else "challenger"}
            for i, c in enumerate(state.contenders)
        ],
        "promotion_rule": {"window": config.promote_after, "margin": config.promote_margin}
        if config.promote_after
        else None,
        "changes": list(state.changes),
        "rollbacks": state.rollbacks,
        "snapshot": {
            "seq": runtime.snapshot_seq,
            "offset": runtime.snapshot_offset,
            "bytes": runtime.snapshot_bytes,
            "time": runtime.snapshot_at or None,
            "age_s": round(now - runtime.snapshot_at, 3) if runtime.snapshot_at else None,
            "errors": runtime.snapshot_errors,
        },
    }
