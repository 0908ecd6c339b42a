"""Latency histograms cheap enough for every event, exported in Prometheus's format.

prometheus_client's Histogram takes a lock and walks its buckets in Python on each observation:
0.64 us against 0.12 us here (measured on this machine), so three per event would cost ~4% of a
worker at 20,000 events/s instead of ~0.7%. Here an observation is one bisect and one
increment; buckets are cumulated only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left

#: upper bounds in seconds: 50 us to 10 s, about three per decade
BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per bucket (the last one is +Inf) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count of observations <= le), ...] ending with +Inf, as Prometheus exposes them."""
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
