"""The alert rules against live workers: a real Prometheus scrapes two workers, evaluates the
rules of tools/alerts.py (with short `for` durations) and fires StreamappWorkerDown when one of
them is killed, while the survivor takes its partitions so that StreamappPartitionUnserved
resolves. Prometheus is Debian's (tools/install_prometheus.sh); the test skips where it cannot
be installed or run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chaos import run_stream
from tests.integration.cluster import ROOT, Worker, free_port, start_all, unique_env, wait_for

PARTITIONS = 4
JOB = "streamapp"
RUNBOOKS = "https://runbooks.test/streamapp"
# Short enough for a test; the rest keep their defaults (pending would show as well as firing).
SETTINGS = ("worker_down_for=3s", "partition_unserved_for=2s", f"runbook_base={RUNBOOKS}")


@dataclass
class Prometheus:
    """A Prometheus process of the test's own: its config, data directory and port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}{query}", timeout=5) as response:
            doc = json.load(response)
        assert doc["status"] == "success", doc
        return doc["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        found: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return found

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> dict[str, str]:
        """Health of each active target, by instance."""
        return {t["labels"]["instance"]: t["health"] for t in self.get("/api/v1/targets")["activeTargets"]}

    def value(self, query: str) -> float | None:
        result = self.get("/api/v1/query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def prometheus_binary() -> str:
    """/usr/bin/prometheus, installed once by tools/install_prometheus.sh; skips if it cannot run."""
    if not shutil.which("prometheus"):
        subprocess.run([str(ROOT / "tools" / "install_prometheus.sh")], check=False, timeout=600)
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus cannot be installed here (tools/install_prometheus.sh: no root, sudo or apt)")
    if subprocess.run([binary, "--version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip(f"{binary} does not run here")
    return binary


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Starts a Prometheus on a free port that scrapes the given workers every second and
    evaluates the generated rules every second; stops it at the end, whatever happens."""
    binary = prometheus_binary()
    started: list[Prometheus] = []

    def start(workers: list[Worker]) -> Prometheus:
        rules = tmp_path / "rules"
        sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
        subprocess.run([sys.executable, "tools/alerts.py", *sets, "--out", str(rules)], cwd=ROOT, check=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules / "rules.yaml")],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{w.port}" for w in workers]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port, log = free_port(), tmp_path / "prometheus.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        prometheus = Prometheus(proc, port, log)
        started.append(prometheus)

        def ready() -> bool:
            assert proc.poll() is None, f"Prometheus exited:\n{prometheus.log_tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for("Prometheus to be ready", ready, 30, prometheus.log_tail)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.proc.terminate()
        try:
            prometheus.proc.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.proc.kill()
            prometheus.proc.wait()


def test_a_killed_worker_fires_worker_down_and_the_survivor_serves_its_partitions(
    tmp_path: Path, prometheus_for: Any
) -> None:
    began = time.monotonic()
    env = unique_env(PARTITIONS, session_timeout="6")
    workers = [Worker(env, tmp_path / "w1"), Worker(env, tmp_path / "w2")]
    try:
        start_all(workers)
        survivor, victim = workers

        def spread() -> bool:
            return all(w.get("/ready") and w.metrics()["streamapp_partition_served"].samples for w in workers)

        wait_for("both workers to serve partitions", spread, 60, lambda: victim.log_tail())
        prometheus = prometheus_for(workers)
        instance = f"127.0.0.1:{victim.port}"
        names = {rule["name"] for rule in prometheus.rules()}
        assert len(names) == 15 and "StreamappWorkerDown" in names

        # Healthy: both targets up, every rule evaluated without error, nothing pending or firing,
        # while events flow; then still nothing for a few evaluations.
        def healthy() -> bool:
            rules = prometheus.rules()
            return (
                set(prometheus.targets().values()) == {"up"}
                and all(r["health"] == "ok" and r["lastEvaluation"][:4] != "0001" for r in rules)
                and prometheus.alerts() == []
            )

        wait_for("a healthy cluster without alerts", healthy, 30, lambda: json.dumps(prometheus.alerts()))
        run_stream(env, events=600, rate=300, script=[])
        events = f'sum(streamapp_events_total{{job="{JOB}"}})'
        wait_for("Prometheus to see every event", lambda: prometheus.value(events) == 600, 30)
        for _ in range(3):
            time.sleep(1)
            assert prometheus.alerts() == [], prometheus.alerts()
        assert [r for r in prometheus.rules() if r["health"] != "ok"] == []

        victim.stop(signal.SIGKILL)
        killed = time.monotonic()
        unserved_seen: list[str] = []

        def worker_down() -> dict[str, Any] | None:
            alerts = prometheus.alerts()
            unserved_seen.extend(
                a["state"] for a in alerts if a["labels"]["alertname"] == "StreamappPartitionUnserved"
            )
            return next(
                (
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "StreamappWorkerDown" and a["state"] == "firing"
                ),
                None,
            )

        wait_for("StreamappWorkerDown to fire", lambda: worker_down() is not None, 30, prometheus.log_tail)
        fired = worker_down()
        assert fired is not None
        print(f"fired {time.monotonic() - killed:.1f}s after the SIGKILL:\n{json.dumps(fired, indent=2)}")
        assert fired["labels"] == {
            "alertname": "StreamappWorkerDown",
            "instance": instance,
            "job": JOB,
            "severity": "critical",
        }
        assert fired["annotations"]["runbook_url"] == f"{RUNBOOKS}/worker-down.md"
        assert instance in fired["annotations"]["summary"]

        # The survivor takes every partition: served once each, and StreamappPartitionUnserved
        # (2s `for`: it may fire during the session timeout) neither pending nor firing any more.
        served = f'count(count by (partition) (streamapp_partition_served{{job="{JOB}"}}))'

        def taken_over() -> bool:
            return (
                worker_down() is not None
                and prometheus.value(served) == PARTITIONS
                and not any(
                    a["labels"]["alertname"] == "StreamappPartitionUnserved" for a in prometheus.alerts()
                )
            )

        wait_for("the survivor to serve every partition", taken_over, 45, survivor.log_tail)
        assert len(survivor.metrics()["streamapp_partition_served"].samples) == PARTITIONS
        print(f"StreamappPartitionUnserved meanwhile: {sorted(set(unserved_seen)) or 'never'}")
        print(f"the test took {time.monotonic() - began:.1f}s")
    finally:
        for worker in workers:
            worker.stop()
