"""Kill, stop, wipe, rescale, restart the broker: every partition's model stays exact."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from streamapp.settings import Settings
from tests.integration.chaos import Cluster, assert_exact, run_stream
from tests.integration.cluster import ROOT, unique_env

# A snapshot every 300 events or 3 s: recovery always has a snapshot and a tail to replay.
FAST_SNAPSHOTS = {"snapshot_every_events": "300", "snapshot_every_seconds": "3", "session_timeout": "6"}


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = unique_env(8, **FAST_SNAPSHOTS)
    c = Cluster(env, tmp_path)
    yield c
    c.stop_all()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_killed_mid_stream_and_restarted(cluster: Cluster, sig: int) -> None:
    for name in ("w1", "w2", "w3"):
        cluster.start(name)
    run_stream(
        cluster.env, events=8000, rate=400,
        script=[(7, lambda: cluster.stop("w2", sig)), (13, lambda: cluster.start("w2"))],
    )
    assert_exact(cluster, Settings.from_env(cluster.env))
    restarted = [s for s, w in cluster.served().values() if w.datadir.name == "w2"]
    assert restarted, "the restarted worker serves partitions again"


def test_worker_restarted_with_a_wiped_data_directory(cluster: Cluster) -> None:
    for name in ("w1", "w2", "w3"):
        cluster.start(name)

    def kill_and_wipe() -> None:
        cluster.stop("w2", signal.SIGKILL)
        cluster.wipe("w2")

    run_stream(cluster.env, events=8000, rate=400, script=[(7, kill_and_wipe), (13, lambda: cluster.start("w2"))])
    assert_exact(cluster, Settings.from_env(cluster.env))


def test_scale_one_to_three_to_two_workers(cluster: Cluster) -> None:
    cluster.start("w1")
    run_stream(
        cluster.env, events=8000, rate=400,
        script=[
            (5, lambda: cluster.start("w2")),
            (6, lambda: cluster.start("w3")),
            (13, lambda: cluster.stop("w3", signal.SIGTERM)),
        ],
    )
    assert_exact(cluster, Settings.from_env(cluster.env))
    assert len({w.datadir.name for _, w in cluster.served().values()}) == 2


def test_broker_restart_mid_stream(cluster: Cluster) -> None:
    cluster.start("w1")
    cluster.start("w2")
    restart = lambda: subprocess.run([str(ROOT / "tools/kafka/kafka.sh"), "restart"], check=True)  # noqa: E731
    run_stream(cluster.env, events=6000, rate=400, script=[(6, restart)])
    assert_exact(cluster, Settings.from_env(cluster.env))
