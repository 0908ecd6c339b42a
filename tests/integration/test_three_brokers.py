"""Three Kafka nodes (tools/kafka/kafka.sh with BROKERS=3), topics with three replicas: a node
SIGKILLed mid-stream, the leader of an events partition or the active controller, then started
again, loses no event and no prediction, and every partition's model stays exact.

The cluster has its own KAFKA_HOME (a temporary directory) and ports, so the test broker on 9092
that the other tests use is never touched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.settings import Settings
from tests.integration import cluster as cluster_module
from tests.integration.chaos import Cluster, assert_exact, run_stream
from tests.integration.cluster import ROOT, port_open, unique_env, wait_for

KAFKA_SH = ROOT / "tools/kafka/kafka.sh"
NODES = (1, 2, 3)
# A snapshot every 300 events or 3 s: recovery always has a snapshot and a tail to replay.
FAST_SNAPSHOTS = {"snapshot_every_events": "300", "snapshot_every_seconds": "3"}
PARTITIONS = 4
# 25 s of stream: the node is killed at 3 s and started again at 7 s. It is back 5 s later on an
# idle machine, 15-20 s later on two busy cores (workers, producer, other brokers): at or near the
# stream's end.
EVENTS, RATE = 10000, 400


@dataclass
class ThreeBrokers:
    """The cluster, driven through kafka.sh: node N listens on port + 100 * (N - 1)."""

    home: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            "BROKERS": "3",
            "KAFKA_HOME": str(self.home),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "KAFKA_SASL_PORT": str(self.port + 2),
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + 100 * (n - 1)}" for n in NODES)

    def sh(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(KAFKA_SH), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=240,
        )
        if check and done.returncode:
            raise AssertionError(
                f"kafka.sh {' '.join(args)} exited with {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def leader(self, topic: str, partition: int) -> int:
        return int(self.sh("leader", topic, str(partition)))

    def controller(self) -> int:
        return int(self.sh("controller"))

    def kill(self, node: int) -> None:
        self.sh("kill-node", str(node))

    def start(self, node: int) -> None:
        """Until the node is a registered, unfenced broker again (kafka.sh waits for it)."""
        self.sh("start-node", str(node))

    def partitions(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the metadata has them: leader, replicas (the preferred
        leader first) and in-sync replicas, by node id."""

        async def read() -> list[dict[str, Any]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
            finally:
                await admin.close()
            return list(described["partitions"])

        return asyncio.run(read())

    def replicas(self, topics: list[str]) -> dict[str, set[int]]:
        """How many replicas each topic's partitions have (one set per topic)."""

        async def read() -> dict[str, set[int]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                described = await admin.describe_topics(topics)
            finally:
                await admin.close()
            return {t["topic"]: {len(p["replicas"]) for p in t["partitions"]} for t in described}

        return asyncio.run(read())


def free_base_port() -> int:
    """The first base port whose nine ports (client, controller, SASL of three nodes) are free."""
    for base in range(19092, 30000, 1000):
        ports = [base + 100 * (n - 1) + k for n in NODES for k in range(3)]
        if not any(port_open(p) for p in ports):
            return base
    raise AssertionError("no free ports for the three-node cluster between 19092 and 30000")


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreeBrokers]:
    home = tmp_path_factory.mktemp("kafka3")
    # The jars and the test certificates of the single broker serve as they are (kafka.sh fetches
    # or makes its own when they are missing or stale).
    for shared in ("libs", "ssl"):
        if (ROOT / ".kafka" / shared).is_dir():
            (home / shared).symlink_to(ROOT / ".kafka" / shared)
    three = ThreeBrokers(home, free_base_port())
    try:
        started = time.monotonic()
        three.sh("up")
        print(f"\nthree nodes up on {three.bootstrap} in {time.monotonic() - started:.1f}s")
        # The reading helpers of cluster.py (assert_exact's end offsets and topic reads) ask this
        # cluster while the module runs.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cluster_module, "BOOTSTRAP", three.bootstrap)
            yield three
    finally:
        three.sh("down", check=False)


@pytest.fixture
def app(brokers: ThreeBrokers, tmp_path: Path) -> Iterator[Cluster]:
    env = unique_env(PARTITIONS, bootstrap=brokers.bootstrap, replication_factor="3", **FAST_SNAPSHOTS)
    workers = Cluster(env, tmp_path)
    yield workers
    workers.stop_all()


def kill_and_restart(
    brokers: ThreeBrokers, app: Cluster, victim: int, failed_over: tuple[str, Callable[[], bool]]
) -> None:
    """The stream, with `victim` SIGKILLed at 3 s (then until `failed_over`: what, check) and
    started again at 7 s (then until it is back in every events partition's ISR and leads its
    preferred partitions again: a second leadership change); then every partition's model and
    predictions are checked against River (chaos.assert_exact)."""
    settings = Settings.from_env(app.env)
    took: dict[str, float] = {}

    def kill() -> None:
        started = time.monotonic()
        brokers.kill(victim)
        wait_for(*failed_over, timeout=30)
        took["fail-over"] = time.monotonic() - started

    def restart() -> None:
        started = time.monotonic()
        brokers.start(victim)
        took["restart"] = time.monotonic() - started

        def rejoined() -> bool:
            found = brokers.partitions(settings.events_topic)
            return all(victim in p["isr"] and p["leader"] == p["replicas"][0] for p in found)

        what = (
            f"node {victim} in every ISR of {settings.events_topic}, each partition led by its preferred node"
        )
        wait_for(what, rejoined, 30)
        took["rejoin"] = time.monotonic() - started

    started = time.monotonic()
    run_stream(app.env, events=EVENTS, rate=RATE, script=[(3, kill), (7, restart)])
    assert_exact(app, settings)
    took["exact, from the stream's start"] = time.monotonic() - started
    print(f"\nnode {victim}: " + ", ".join(f"{what} {s:.1f}s" for what, s in took.items()))

    # Replication was real: the app's topics, its table's changelog (Faust's name) and the
    # group's offsets have three replicas each.
    topics = [settings.events_topic, settings.predictions_topic, settings.deadletter_topic]
    found = brokers.replicas([*topics, f"{settings.app_id}-snapshots-changelog", "__consumer_offsets"])
    assert all(counts == {3} for counts in found.values()), found


def test_partition_leader_killed_mid_stream_and_restarted(brokers: ThreeBrokers, app: Cluster) -> None:
    topic = Settings.from_env(app.env).events_topic
    app.start_all("w1", "w2")
    # A partition led by another node than the active controller: this test is about a broker
    # going away; the next one kills the controller.
    controller = brokers.controller()
    partition, victim = next(
        (p, leader) for p in range(PARTITIONS) if (leader := brokers.leader(topic, p)) != controller
    )
    moved = lambda: brokers.leader(topic, partition) not in (victim, -1)  # noqa: E731
    kill_and_restart(
        brokers, app, victim, (f"a new leader of {topic}[{partition}] than node {victim}", moved)
    )


def test_active_controller_killed_mid_stream_and_restarted(brokers: ThreeBrokers, app: Cluster) -> None:
    app.start_all("w1", "w2")
    victim = brokers.controller()
    elected = lambda: brokers.controller() not in (victim, -1)  # noqa: E731
    kill_and_restart(brokers, app, victim, (f"a new active controller than node {victim}", elected))
