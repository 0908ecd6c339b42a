"""The worker image built and run for real: what tests/deploy/test_dockerfile.py can only read.

buildah builds the Dockerfile on a Debian base made from Debian's packages (no Docker engine and
no registry here: tools/container/base.sh, cached, and tools/container/build.sh), and podman runs
it as the StatefulSet does: uid 10001, a read-only root, a data volume, /tmp on tmpfs, settings
from STREAMAPP_* variables. The worker in it must learn each partition exactly as River's
progressive validation does, and stop warm, with exit code 0, on the SIGTERM of `podman stop`.
Skips, saying what failed, where the tools are missing (`make containers`) or cannot run a
container. The build time, the image's size and the stop time are logged (`-rP` shows them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp import models
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import (
    ROOT,
    Worker,
    broker_up,
    free_port,
    read_topic,
    unique_env,
    wait_for,
)
from tests.integration.test_oracle import TOL, sub_streams
from tests.oracle import river_predictions, river_scores

pytestmark = pytest.mark.integration

TOOLS = ROOT / "tools" / "container"
BASE_IMAGE = "localhost/streamapp-base:bookworm"
#: k8s/base/statefulset.yaml's terminationGracePeriodSeconds: the SIGKILL comes after as long
GRACE = 120
PARTITIONS = 4
log = logging.getLogger(__name__)


def call(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command of buildah, podman or tools/container under the shipped containers.conf (runc,
    cgroupfs and ulimits that this VM allows)."""
    return subprocess.run(argv, env=container_env(env), capture_output=True, text=True, timeout=600)


def container_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(TOOLS / "containers.conf"), **extra}


def tail(result: subprocess.CompletedProcess[str], lines: int = 20) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image built from the Dockerfile, removed after (the base image stays, cached)."""
    if not broker_up():
        pytest.skip("no Kafka broker on 127.0.0.1:9092 (tools/kafka/kafka.sh up)")
    missing = [tool for tool in ("buildah", "podman", "debootstrap", "runc") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (`make containers` installs them)")
    base = call(str(TOOLS / "base.sh"), BASE_IMAGE)
    if base.returncode:
        pytest.skip(f"tools/container/base.sh cannot make the base image here:\n{tail(base)}")
    tried = call("podman", "run", "--rm", "--network", "host", BASE_IMAGE, "true")
    if tried.returncode:
        pytest.skip(f"podman cannot start a container here:\n{tail(tried)}")
    tag = f"localhost/streamapp:test-{uuid.uuid4().hex[:8]}"
    # pip in the build trusts the host's CAs too: HTTPS may go through a proxy that re-signs it.
    extra_ca = os.environ.get("STREAMAPP_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt")
    started = time.monotonic()
    built = call(str(TOOLS / "build.sh"), tag, STREAMAPP_EXTRA_CA=extra_ca)
    assert built.returncode == 0, tail(built, 60)
    size = int(call("podman", "image", "inspect", "--format", "{{.Size}}", tag).stdout)
    log.info("built %s in %.1f s: %.0f MB", tag, time.monotonic() - started, size / 1e6)
    try:
        yield tag
    finally:
        call("podman", "rmi", "--force", tag)


def predictions_by_partition(topic: str) -> dict[int, list[dict[str, Any]]]:
    """The prediction records of each partition, in offset order of the event they score."""
    out: dict[int, list[dict[str, Any]]] = {}
    for partition, records in read_topic(topic, PARTITIONS).items():
        docs = [orjson.loads(record.value) for record in records]
        assert all(doc["partition"] == partition for doc in docs)
        out[partition] = sorted(docs, key=lambda doc: doc["offset"])
    return out


def test_the_image_runs_the_worker_exactly_as_river_and_stops_warm(image: str, tmp_path: Path) -> None:
    env = unique_env(
        PARTITIONS,
        model="hoeffding_tree",
        snapshot_every_events="200",
        web_port=str(free_port()),
        web_bind="127.0.0.1",  # the host network's loopback: the test reaches it, nothing else
    )
    settings = Settings.from_env(env)
    name = f"streamapp-{env['STREAMAPP_APP_ID']}"
    volume = f"{name}-data"
    # The Worker's web client and log tail; its `proc` is `podman wait`, which runs as long as the
    # container does, then prints the exit code (also after --rm removed the container).
    worker = Worker(env, tmp_path / "container", port=settings.web_port)
    try:
        run = call(
            *("podman", "run", "--rm", "--detach", "--name", name, "--user", "10001", "--read-only"),
            *("--network", "host", "--volume", f"{volume}:/var/lib/streamapp", "--tmpfs", "/tmp"),
            *("--log-driver", "k8s-file", "--log-opt", f"path={worker.log_path}"),
            *(f"--env={key}" for key in env),  # values from podman's environment, not its argv
            image,
            **env,
        )
        assert run.returncode == 0, tail(run)
        waiting = worker.proc = subprocess.Popen(
            ["podman", "wait", name], env=container_env({}), stdout=subprocess.PIPE
        )
        wait_for("the worker's /ready", lambda: worker.get("/ready") is not None, 90, worker.log_tail)

        assert asyncio.run(produce(settings, "phishing", progress=False)) == 1250
        served = worker.wait_caught_up(settings.events_topic, PARTITIONS)
        cluster = worker.get("/models")
        assert [p["partition"] for p in cluster["partitions"]] == list(range(PARTITIONS))
        assert all(p["status"] == "served" and p["model"] == "hoeffding_tree" for p in cluster["partitions"])

        build = models.resolve("hoeffding_tree").build
        predictions = predictions_by_partition(settings.predictions_topic)
        for partition, stream in sub_streams(settings.events_topic, PARTITIONS).items():
            assert served[partition]["events_learned"] == len(stream) > 100, "keys spread over partitions"
            expected = river_scores(stream, build, ["rocauc", "accuracy", "f1", "logloss"])
            assert served[partition]["metrics"] == pytest.approx(expected, abs=TOL), partition
            river = river_predictions(stream, build, "rocauc")
            assert [d["offset"] for d in predictions[partition]] == list(range(len(stream)))
            assert [d["proba"] for d in predictions[partition]] == [
                {str(k).lower(): v for k, v in p.items()} for p in river
            ]

        stopping = time.monotonic()
        stopped = call("podman", "stop", "--time", str(GRACE), name)
        took = time.monotonic() - stopping
        exit_code = waiting.communicate(timeout=30)[0].decode().strip()
        log.info("podman stop (SIGTERM, then SIGKILL after %d s) took %.1f s", GRACE, took)
        assert stopped.returncode == 0, tail(stopped)
        assert exit_code == "0", f"exit code {exit_code!r}\n{worker.log_tail()}"
        assert took < GRACE / 4, f"a warm shutdown takes seconds, not {took:.0f} s of the {GRACE} s"
        # The SIGTERM reached the worker itself (PID 1), which left the group and closed cleanly.
        said = [line.split(" ", 3)[-1] for line in worker.log_path.read_text().splitlines()]
        for step in ("[^Worker]: Signal received: 15", "LeaveGroup request succeeded"):
            assert any(step in line for line in said), f"{step!r} missing\n{worker.log_tail()}"
        assert said[-1].strip().endswith("[^Worker]: Closing event loop"), worker.log_tail()
    finally:
        call("podman", "rm", "--force", "--ignore", "--time", "0", name)
        call("podman", "volume", "rm", "--force", volume)
        if worker.proc is not None:
            worker.proc.kill()
