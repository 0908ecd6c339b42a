"""Concept drift on a partition's error stream, with River's ADWIN.

The detector sees what the prequential metrics see, at the same moment (inline or late label):
for classification 1 when the predicted class was wrong, else 0; for regression the absolute
error. Anomaly scores have no error to watch. Detections are counted and the last few kept with
their offset, so a detection can be found again in the partition's log.

ADWIN flags a change of the error's mean either way. A fall is a model that learned (a young
tree's error drops in steps): replacing it then would throw good learning away, so each detection
records its direction, and the reset policy acts on rises only.
"""

from __future__ import annotations

import time
from typing import Any

from river import drift

KEEP = 10  # detections kept with their offset and time


class DriftMonitor:
    """One partition's drift detector; pickled with the partition state, so replay is exact."""

    def __init__(self) -> None:
        self.detector = drift.ADWIN()
        self.detections = 0
        self.rises = 0  # detections where the error rose
        self.recent: list[tuple[int, float, str]] = []  # (offset, wall clock, "rise"/"fall")
        self.rose = False  # the last detection was a rise of the error

    def update(self, error: float | None, offset: int) -> bool:
        """Feed the error of one labelled prediction (None: nothing to watch); True when it
        completes a detection (then `rose` says whether the error went up: ADWIN dropped the
        older part of its window, so the mean of what remains is above the mean before exactly
        when the recent errors are higher)."""
        if error is None:
            return False
        before = self.detector.estimation
        self.detector.update(error)
        if not self.detector.drift_detected:
            return False
        self.rose = self.detector.estimation > before
        self.detections += 1
        self.rises += self.rose
        self.recent = [*self.recent[-(KEEP - 1) :], (offset, time.time(), "rise" if self.rose else "fall")]
        return True

    def summary(self) -> dict[str, Any]:
        return {
            "detector": "ADWIN",
            "detections": self.detections,
            "rises": self.rises,
            # entries from before directions were kept have none
            "recent": [
                dict(zip(("offset", "time", "direction"), entry, strict=False)) for entry in self.recent
            ],
            "error_mean": self.detector.estimation,  # over ADWIN's current window
        }
