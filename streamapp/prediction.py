"""The prediction record of a scored event: what downstream systems and auditors read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamapp.partition import Scored


@dataclass(slots=True)
class Times:
    """Wall-clock seconds of one event's way through the worker (the paper's latencies)."""

    produced: float  # the record's timestamp (received, when it has none)
    received: float  # handed to the processor
    sent: float  # handed to the producer


def prediction_record(
    scored: Scored, key: bytes | None, partition: int, offset: int, times: Times, threshold: float
) -> dict[str, Any]:
    """The record for the predictions topic; anomaly scores at or above `threshold` alert."""
    record = {
        "id": scored.event.id,
        "key": key.decode("utf-8", "replace") if key else None,
        "partition": partition,
        "offset": offset,
        "model": scored.version,
        **scored.prediction,
        "learned": scored.learned,
        "replayed": scored.replayed,
        "timings": {
            "message_latency_s": times.received - times.produced,
            "predict_s": scored.predict_s,
            "learn_s": scored.learn_s,
            "end_to_end_s": times.sent - times.produced,
        },
    }
    if scored.challengers is not None:
        record["challengers"] = scored.challengers
    score = scored.prediction.get("score")
    if score is not None:  # anomaly models: the alert is the decision, the score its why
        record["alert"] = score >= threshold
    return record
