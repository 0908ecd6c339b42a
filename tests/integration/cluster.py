"""Real parts for integration tests: the local broker, worker processes, topic read-back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client.parser import text_string_to_metric_families

from streamapp.settings import Settings
from streamapp.topics import create_topics
from tests import TEST_SIGNING_KEY

ROOT = Path(__file__).resolve().parents[2]
# The ports and home of tools/kafka/kafka.sh (the same variables), so that the tests can run
# against a second broker: KAFKA_HOME=/tmp/k KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093
# KAFKA_SASL_PORT=19094 tools/kafka/kafka.sh up, then pytest with the same variables.
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
# kafka.sh's SASL_SSL listener: its users (PLAIN, SCRAM-SHA-256/512) and the CA of its certificate.
SASL_PORT = int(os.environ.get("KAFKA_SASL_PORT", "9094"))
SASL_BOOTSTRAP = f"127.0.0.1:{SASL_PORT}"
SASL_USER = "streamapp"
SASL_PASSWORD = "streamapp-secret"
SASL_CAFILE = Path(os.environ.get("KAFKA_HOME", ROOT / ".kafka")) / "ssl" / "ca.pem"


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def broker_up() -> bool:
    return port_open(KAFKA_PORT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_env(partitions: int, bootstrap: str | None = None, **extra: str) -> dict[str, str]:
    """Settings of a fresh app: its own group, topics and tables, so tests never share state.

    `bootstrap`: other brokers than the test broker, as "host:port,host:port" (e.g. the three
    nodes of tests/integration/test_three_brokers.py)."""
    uid = uuid.uuid4().hex[:8]
    env = {
        "STREAMAPP_BROKER": ";".join(f"kafka://{hp}" for hp in (bootstrap or BOOTSTRAP).split(",")),
        "STREAMAPP_APP_ID": f"it-{uid}",
        "STREAMAPP_EVENTS_TOPIC": f"events-{uid}",
        "STREAMAPP_PREDICTIONS_TOPIC": f"predictions-{uid}",
        "STREAMAPP_DEADLETTER_TOPIC": f"deadletter-{uid}",
        "STREAMAPP_PARTITIONS": str(partitions),
        "STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY,
    }
    env.update({f"STREAMAPP_{k.upper()}": v for k, v in extra.items()})
    settings = Settings.from_env(env)
    asyncio.run(create_topics(settings))
    return env


#: seconds between two checks of wait_for: short, as every test waits on workers many times
POLL = 0.05


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, on_timeout: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


@dataclass
class Worker:
    """One `streamapp worker` process with its own data directory and web port."""

    env: dict[str, str]
    datadir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.datadir.with_suffix(".log")

    def _popen(self) -> subprocess.Popen[bytes]:
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "STREAMAPP_DATADIR": str(self.datadir)}
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "streamapp", "worker", "-l", "info", "--web-port", str(self.port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> Worker:
        return self.launch().ready()

    def launch(self) -> Worker:
        """Start the process without waiting for it (see `start_all`)."""
        self.proc = self._popen()
        return self

    def ready(self) -> Worker:
        """Until the launched worker answers on its web port."""
        wait_for("the worker's web views", lambda: self.get("/health") is not None, 60, self.log_tail)
        return self

    def run_until_exit(self, timeout: float) -> int:
        """For a worker that must stop by itself: its exit code (its output is in `log_path`)."""
        self.proc = self._popen()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the worker still ran after {timeout}s\n{self.log_tail()}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> Any:
        if not self.alive():
            raise AssertionError(
                f"worker exited with {self.proc and self.proc.returncode}\n{self.log_tail()}"
            )
        # Model internals need the read token when the workers have one (either token passes).
        token = self.env.get("STREAMAPP_READ_TOKEN") or self.env.get("STREAMAPP_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def metrics(self) -> dict[str, Any]:
        """The worker's /metrics, by family name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return {f.name: f for f in text_string_to_metric_families(response.read().decode())}

    def models(self) -> dict[int, dict[str, Any]]:
        """The partitions this worker serves (its /models/local)."""
        doc = self.get("/models/local") or {"partitions": []}
        return {p["partition"]: p for p in doc["partitions"]}

    def wait_caught_up(self, topic: str, partitions: int, timeout: float = 120) -> dict[int, dict[str, Any]]:
        """Until every partition has applied every message of the topic; returns /models then."""
        ends = end_offsets(topic, partitions)

        def caught_up() -> bool:
            seen = self.models()
            return all(seen.get(p, {}).get("offset_applied", -1) == end - 1 for p, end in ends.items() if end)

        wait_for(f"the worker to apply {sum(ends.values())} messages", caught_up, timeout, self.log_tail)
        return self.models()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_all(workers: list[Worker]) -> list[Worker]:
    """Start the workers side by side (each takes seconds to import and start): all are launched,
    then each is waited for."""
    for worker in workers:
        worker.launch()
    try:
        return [worker.ready() for worker in workers]
    except BaseException:
        for worker in workers:
            worker.stop()
        raise


@contextlib.contextmanager
def running(env: dict[str, str], datadir: Path) -> Iterator[Worker]:
    worker = Worker(env, datadir).start()
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def running_all(workers: list[Worker]) -> Iterator[list[Worker]]:
    """`running` for several workers, started side by side."""
    try:
        yield start_all(workers)
    finally:
        for worker in workers:
            worker.stop()


def end_offsets(topic: str, partitions: int) -> dict[int, int]:
    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def read_topic(
    topic: str, partitions: int, isolation_level: str = "read_uncommitted"
) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """Every record of every partition, in offset order, read independently of any worker
    (read_committed: the records of committed transactions, up to the last stable offset)."""

    async def read() -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            out: dict[int, list[ConsumerRecord[bytes, bytes]]] = {p: [] for p in range(partitions)}

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    out[tp.partition].extend(r for r in records if r.offset < ends[tp])
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def send_raw(topic: str, messages: list[tuple[int, bytes | None, bytes | None]]) -> None:
    """(partition, key, value) sent in order, to exactly the given partitions."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, max_request_size=4_000_000)
        await producer.start()
        try:
            sent = [
                await producer.send(topic, value, key=key, partition=partition)
                for partition, key, value in messages
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def committed_offsets(group: str, topic: str) -> dict[int, int]:
    """The offsets the consumer group committed for the topic's partitions (absent: none yet)."""

    async def read() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp.partition: found.offset for tp, found in offsets.items() if tp.topic == topic}

    return asyncio.run(read())


def committed_offset(group: str, topic: str, partition: int) -> int | None:
    """The offset the consumer group committed for the partition (None: none yet)."""
    return committed_offsets(group, topic).get(partition)


def delete_records_before(topic: str, partition: int, offset: int) -> None:
    """What retention does to old segments: the partition's log now starts at `offset`."""

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})
        finally:
            await admin.close()

    asyncio.run(delete())
