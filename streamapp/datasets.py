"""Streams to produce: synthetic card transactions with fraud, and River's bundled datasets.

Every stream is deterministic for a seed, so a run can be replayed and checked offline. Each
sample carries the key (the entity: card, site, applicant) that the producer partitions by.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from river import datasets
from river.datasets import synth


@dataclass(frozen=True, slots=True)
class Sample:
    key: str
    id: str
    x: dict[str, Any]
    y: Any


# Merchant category groups: everyday spending, and the categories card fraud concentrates in.
_EVERYDAY = ("grocery", "fuel", "restaurant", "pharmacy", "transport", "utilities", "clothing")
_EVERYDAY_WEIGHTS = (30, 15, 20, 8, 12, 5, 10)
_RISKY = ("electronics", "jewelry", "gambling", "money_transfer", "gift_cards")


@dataclass
class _Card:
    typical_amount: float  # log-scale centre of the holder's spending
    active_hour: float  # centre of the holder's day
    recent: deque[float]  # times of the last transactions, for velocity


def card_transactions(seed: int = 42, cards: int = 500, fraud_rate: float = 0.02) -> Iterator[Sample]:
    """Card payments with injected fraud, as a fraud team would featurise them.

    Features: amount, merchant category, hour of day, distance from the holder's home, velocity
    (the card's transactions in the last hour, this one included) and whether it was online.
    Fraud is rarer than 1 in 20 and differs in every feature, but overlaps with normal spending,
    so a good model reaches a high but imperfect ROCAUC.
    """
    rng = random.Random(seed)
    holders = [_Card(rng.gauss(3.6, 0.6), rng.gauss(14.0, 2.5), deque(maxlen=32)) for _ in range(cards)]
    clock = 0.0
    for i in itertools.count():
        clock += rng.expovariate(1 / 4.0)  # a payment every ~4 s across all cards
        card_no = rng.randrange(cards)
        card = holders[card_no]
        fraud = rng.random() < fraud_rate
        if fraud:
            amount = math.exp(rng.gauss(card.typical_amount + 1.3, 0.9))
            category = rng.choice(_RISKY) if rng.random() < 0.7 else rng.choice(_EVERYDAY)
            hour = rng.randrange(24) if rng.random() < 0.5 else rng.choice((0, 1, 2, 3, 4, 23))
            distance = rng.expovariate(1 / 400.0)
            online = rng.random() < 0.75
            burst = rng.randint(1, 6)  # card testing: several payments in quick succession
        else:
            amount = math.exp(rng.gauss(card.typical_amount, 0.7))
            category = (
                rng.choices(_EVERYDAY, _EVERYDAY_WEIGHTS)[0] if rng.random() < 0.95 else rng.choice(_RISKY)
            )
            hour = int(rng.gauss(card.active_hour, 3.5)) % 24
            distance = rng.expovariate(1 / 8.0)
            online = rng.random() < 0.2
            burst = 0
        card.recent.append(clock)
        while card.recent and clock - card.recent[0] > 3600:
            card.recent.popleft()
        x = {
            "amount": round(amount, 2),
            "merchant_category": category,
            "hour": hour,
            "distance_from_home_km": round(distance, 1),
            "velocity_1h": len(card.recent) + burst,
            "online": online,
        }
        yield Sample(f"card-{card_no:05d}", f"txn-{seed}-{i}", x, fraud)


def _from_river(
    stream: Any, prefix: str, keys: int, label: Callable[[Any], Any] = lambda y: y
) -> Iterator[Sample]:
    """River's (x, y) pairs, with string feature names (JSON) and keys spread over `keys` entities."""
    for i, (x, y) in enumerate(stream):
        features = {str(name): value for name, value in x.items()}
        yield Sample(f"{prefix}-{i % keys:04d}", f"{prefix}-{i}", features, label(y))


def phishing(seed: int = 42) -> Iterator[Sample]:
    """River's bundled Phishing websites (1,250 labelled pages); the seed is not used."""
    return _from_river(datasets.Phishing(), "site", keys=64)


def agrawal(seed: int = 42) -> Iterator[Sample]:
    """Agrawal's loan applications (function 0), an endless stream."""
    return _from_river(synth.Agrawal(classification_function=0, seed=seed), "applicant", keys=1000)


def sea(seed: int = 42, drift_at: int = 50_000) -> Iterator[Sample]:
    """SEA concepts with an abrupt drift from variant 0 to variant 3 at `drift_at`."""
    before = itertools.islice(synth.SEA(variant=0, seed=seed), drift_at)
    stream = itertools.chain(before, synth.SEA(variant=3, seed=seed + 1))
    return _from_river(stream, "sea", keys=1000)


def hyperplane(seed: int = 42) -> Iterator[Sample]:
    """A rotating hyperplane (10 features, gradual drift)."""
    return _from_river(synth.Hyperplane(seed=seed, n_features=10, mag_change=0.001), "plane", keys=1000)


DATASETS: dict[str, Callable[[int], Iterator[Sample]]] = {
    "card": card_transactions,
    "phishing": phishing,
    "agrawal": agrawal,
    "sea": sea,
    "hyperplane": hyperplane,
}


def load(name: str, seed: int = 42, limit: int | None = None) -> Iterator[Sample]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return itertools.islice(DATASETS[name](seed), limit)
