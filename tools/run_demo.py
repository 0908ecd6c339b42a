"""`make run`: local Kafka, the topics, WORKERS workers and a card-fraud producer; Ctrl-C stops all.

Each worker has its own data directory (data/worker-N) and web port (6066 + N - 1). Every ten
seconds a status line shows what the workers have learned, read from their /models views.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
KAFKA = str(ROOT / "tools/kafka/kafka.sh")


def _kafka_running() -> bool:
    return subprocess.run([KAFKA, "status"], capture_output=True).returncode == 0


def _models(ports: list[int]) -> list[dict]:
    """The served partitions of the whole cluster, from the first worker that answers."""
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=5) as response:
                return [p for p in json.load(response)["partitions"] if p["status"] == "served"]
        except (OSError, ValueError, KeyError):
            continue
    return []


def _status(ports: list[int], last: tuple[float, int]) -> tuple[float, int]:
    partitions = _models(ports)
    seen = sum(p["events_seen"] for p in partitions)
    now = time.monotonic()
    rate = (seen - last[1]) / (now - last[0]) if now > last[0] else 0.0
    aucs = [p["metrics"].get("rocauc") for p in partitions if p["events_learned"]]
    auc = f"{sum(aucs) / len(aucs):.3f}" if aucs else "-"
    print(
        f"[demo] {len(partitions)} partitions served, {seen} events scored ({rate:.0f}/s), "
        f"mean ROCAUC {auc}, dead letters {sum(p['deadletters'] for p in partitions)}",
        flush=True,
    )
    return now, seen


def _signing_key() -> str:
    """STREAMAPP_SIGNING_KEY if set, else the demo's own key in data/signing.key (made once,
    readable by this user only): workers refuse to start without one."""
    given = os.environ.get("STREAMAPP_SIGNING_KEY")
    if given:
        return given
    path = ROOT / "data" / "signing.key"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        print(f"[demo] generated a signing key for this machine's workers: {path.relative_to(ROOT)}")
    else:
        print(f"[demo] signing key (STREAMAPP_SIGNING_KEY): {path.relative_to(ROOT)}")
    return path.read_text().strip()


def main() -> int:
    workers = int(os.environ.get("WORKERS", "1"))
    # The demo shows a challenger beside the champion unless told otherwise (empty: none).
    if "STREAMAPP_MODEL" not in os.environ:
        os.environ.setdefault("STREAMAPP_CHALLENGERS", "logistic_regression")
    rate = os.environ.get("RATE", "200")
    started_kafka = not _kafka_running()
    if started_kafka and subprocess.run([KAFKA, "up"]).returncode != 0:
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from streamapp.settings import ConfigError, Settings
        from streamapp.topics import create_topics

        try:
            settings = Settings.from_env()
            asyncio.run(create_topics(settings))
        except ConfigError as exc:
            print(f"streamapp: configuration error: {exc}", file=sys.stderr)
            return 2
        ports = [settings.web_port + i for i in range(workers)]
        if started_kafka:
            # A fresh broker has none of the old changelogs: old worker state would not match it.
            for old in (ROOT / "data").glob("worker-*"):
                if old.is_dir():
                    shutil.rmtree(old)
        (ROOT / "data").mkdir(exist_ok=True)
        os.environ["STREAMAPP_SIGNING_KEY"] = _signing_key()
        for n, port in enumerate(ports, start=1):
            env = {**os.environ, "STREAMAPP_DATADIR": str(ROOT / f"data/worker-{n}")}
            log = open(ROOT / f"data/worker-{n}.log", "ab")  # noqa: SIM115 - the worker owns it
            procs.append(
                subprocess.Popen(
                    [PYTHON, "-m", "streamapp", "worker", "-l", "info", "--web-port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        procs.append(
            subprocess.Popen(
                [PYTHON, "-m", "streamapp", "produce", "--dataset", "card", "--rate", rate, "--quiet"],
                start_new_session=True,
            )
        )
        print(
            f"[demo] {workers} worker(s); logs in data/worker-N.log; producing card transactions at {rate}/s"
        )
        print(f"[demo] dashboard: http://127.0.0.1:{ports[0]}/   (any worker serves the whole cluster)")
        print(f"[demo] web views: http://127.0.0.1:{ports[0]}/models   /metrics   /health   /ready")
        print("[demo] Ctrl-C stops everything", flush=True)
        last = (time.monotonic(), 0)
        while all(p.poll() is None for p in procs):
            time.sleep(10)
            last = _status(ports, last)
        print("[demo] a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[demo] stopping...", flush=True)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_kafka:
            subprocess.run([KAFKA, "down"])


if __name__ == "__main__":
    sys.exit(main())
