"""Drift live: SEA's concept changes abruptly at a known event; ADWIN fires on every partition
after the change and never before it, and the reset policy wins back accuracy sooner than no
policy."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson

from streamapp import datasets, producer
from streamapp.settings import Settings
from streamapp.web import partition_of
from tests.integration.cluster import Worker, read_topic, running_all, send_raw, unique_env

PARTITIONS = 4
EVENTS = 16_000
DRIFT_AT = 8_000  # SEA's threshold moves from 8 to 9.5 here: ~13% of the points change class
AFTER = 1_000  # events per partition after the change over which recovery is compared


def test_drift_is_detected_after_the_change_on_every_partition_and_reset_recovers_sooner(
    tmp_path: Path,
) -> None:
    samples = list(itertools.islice(datasets.sea(seed=42, drift_at=DRIFT_AT), EVENTS))
    messages = [
        (partition_of(s.key, PARTITIONS), key, value)
        for s, (key, value) in zip(samples, producer.messages(samples), strict=True)
    ]
    # Each partition's labels by offset, and the offset of its first event after the change.
    labels: dict[int, list[bool]] = {p: [] for p in range(PARTITIONS)}
    changed_at: dict[int, int] = {}
    for i, (sample, (partition, _, _)) in enumerate(zip(samples, messages, strict=True)):
        if i >= DRIFT_AT:
            changed_at.setdefault(partition, len(labels[partition]))
        labels[partition].append(sample.y)

    # One app per policy on the same stream, their workers side by side.
    policies = ("none", "reset")
    envs = {policy: unique_env(PARTITIONS, model="naive_bayes", drift_policy=policy) for policy in policies}
    settings = {policy: Settings.from_env(env) for policy, env in envs.items()}
    for policy in policies:
        send_raw(settings[policy].events_topic, messages)
    with running_all([Worker(envs[policy], tmp_path / policy) for policy in policies]) as workers:
        served = {
            policy: worker.wait_caught_up(settings[policy].events_topic, PARTITIONS)
            for policy, worker in zip(policies, workers, strict=True)
        }

    accuracy_after: dict[str, dict[int, float]] = {}
    detected_after: dict[int, int] = {}  # events from the change to the first detection
    for policy in policies:
        for partition, state in served[policy].items():
            drift = state["drift"]
            offsets = [d["offset"] for d in drift["recent"]]
            assert drift["detections"] == len(offsets) >= 1, f"{policy} p{partition}: {drift}"
            assert all(o >= changed_at[partition] for o in offsets), (
                f"{policy} p{partition}: detections at {offsets}, the change at {changed_at[partition]}"
            )
            rises = sum(d["direction"] == "rise" for d in drift["recent"])
            assert rises == drift["rises"] >= 1, f"{policy} p{partition}: the error rose: {drift}"
            assert drift["model_resets"] == (rises if policy == "reset" else 0)
            detected_after[partition] = offsets[0] - changed_at[partition]
        accuracy_after[policy] = {}
        for partition, records in read_topic(settings[policy].predictions_topic, PARTITIONS).items():
            window = range(changed_at[partition], changed_at[partition] + AFTER)
            docs = [orjson.loads(r.value) for r in records]
            right = [d["class"] == labels[partition][d["offset"]] for d in docs if d["offset"] in window]
            assert len(right) == AFTER
            accuracy_after[policy][partition] = sum(right) / AFTER
    print(f"first detection, events after the change, per partition: {detected_after}")
    print(f"accuracy over the {AFTER} events after the change, per partition: {accuracy_after}")
    for partition in range(PARTITIONS):
        assert accuracy_after["reset"][partition] > accuracy_after["none"][partition], accuracy_after
