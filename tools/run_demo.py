"""`make run`: local Kafka, the topics, WORKERS workers and a card-fraud producer; Ctrl-C stops all.

Each worker has its own data directory (data/worker-N) and web port (6066 + N - 1). The demo
runs logistic regression as a challenger beside the Hoeffding tree with the promotion rule on,
prints each promotion as it happens and, every ten seconds, a status line of what the workers
have learned; both are read from the cluster view /models.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
KAFKA = str(ROOT / "tools/kafka/kafka.sh")
REGISTRY = str(ROOT / "tools/registry/registry.sh")

POLL_S = 2.0  # how often /models is read for new promotions (the dashboard polls as often)
STATUS_EVERY_S = 10.0  # how often the status line is printed

# The demo's challenger and promotion rule, each only where the user's environment does not set
# it (any STREAMAPP_* of theirs wins). The rule compares the models' ROCAUC over their last
# PROMOTE_AFTER labels (the producer sends each label with its event, so labels = events):
# * 500 labels: the card stream is about 2% fraud, so a window holds ~10 frauds (with 200, ~4,
#   a window can hold a single fraud, and its ROCAUC is then 0 or 1). At the demo's 200 events/s
#   over 8 partitions (25/s each) the first comparison comes ~20 s after a partition starts.
# * margin 0.1 (the default is 0.02): the Hoeffding tree scores every card alike until its first
#   split (ROCAUC 0.50, less over a window) while logistic regression already ranks the frauds:
#   on fresh topics every partition promoted logistic regression at its 500th label, by 0.17 to
#   0.47, and offline over the first 200,000 card events none switched back. With margin 0.05,
#   on topics that held an earlier run's events, one partition traded places twice (by 0.056,
#   then 0.072): leads that small are noise over ~10 frauds, and flips on noise explain nothing.
DEMO_CHALLENGERS = "logistic_regression"
DEMO_PROMOTE_AFTER = "500"
DEMO_PROMOTE_MARGIN = "0.1"


def avro_settings(environ: Mapping[str, str], registry: str) -> dict[str, str]:
    """FORMAT=avro: the card stream as a bank's Avro topic (streamapp/demo_avro.py), read through
    the mapping and the registry, predictions in Avro too, on topics of their own (a JSON demo's
    topics hold JSON). Only what `environ` does not set."""
    from streamapp.demo_avro import WORKER_MAPPING

    wanted = {
        **WORKER_MAPPING,
        "STREAMAPP_OUTPUT_FORMAT": "avro",
        "STREAMAPP_SCHEMA_REGISTRY_URL": registry,
        "STREAMAPP_APP_ID": "streamapp-avro",
        "STREAMAPP_EVENTS_TOPIC": "events-avro",
        "STREAMAPP_PREDICTIONS_TOPIC": "predictions-avro",
        "STREAMAPP_DEADLETTER_TOPIC": "deadletter-avro",
    }
    return {name: value for name, value in wanted.items() if name not in environ}


def demo_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The STREAMAPP_* settings the demo adds to `environ`: only those it does not set.

    With a model of the user's own (STREAMAPP_MODEL) the demo adds no challenger; the promotion
    rule comes with any challenger (an empty STREAMAPP_CHALLENGERS: none, and no rule)."""
    added: dict[str, str] = {}
    if "STREAMAPP_MODEL" not in environ and "STREAMAPP_CHALLENGERS" not in environ:
        added["STREAMAPP_CHALLENGERS"] = DEMO_CHALLENGERS
    challengers = {**environ, **added}.get("STREAMAPP_CHALLENGERS", "")
    if any(name.strip() for name in challengers.split(",")):
        for name, value in (
            ("STREAMAPP_PROMOTE_AFTER", DEMO_PROMOTE_AFTER),
            ("STREAMAPP_PROMOTE_MARGIN", DEMO_PROMOTE_MARGIN),
        ):
            if name not in environ:
                added[name] = value
    return added


# --- what /models says: promotions and the status line (pure, tests/unit/test_run_demo.py) ---

#: the outcome streamapp/changes.py audits for a promotion: "promoted 'new' over 'old'" (reprs)
_NAME = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_PROMOTED = re.compile(rf"promoted {_NAME} over {_NAME}")
#: the main metric of a task's metric set, as the dashboard picks it
MAIN_METRICS = ("rocauc", "mae", "accuracy", "f1", "rmse")
_SHOWN = {"rocauc": "ROCAUC", "mae": "MAE", "rmse": "RMSE", "f1": "F1"}


@dataclass(frozen=True)
class Promotion:
    """A promotion in a partition's audit trail (`changes` of /models)."""

    partition: int
    offset: int  # of the event that made it: a label (the rule) or a control event (a request)
    new: str
    old: str
    request: str  # "promote NAME" (a request) or "rule: METRIC better by GAIN over the last N labels"
    time: float | None  # when the owner applied it (again, after a replay)
    #: each model's metric over the rule's window, as /models showed it when this was found
    rolling: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[int, int]:
        """Which change this is: one per offset of a partition, the same after a replay (a
        restart, a move to another worker) applies it again."""
        return self.partition, self.offset


def served(doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The served partitions of a /models document."""
    return [p for p in (doc or {}).get("partitions", []) if p.get("status") == "served"]


def _rolling(partition: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for model in partition.get("models") or []:
        for value in (model.get("rolling") or {}).values():
            if value is not None:
                out[model["name"]] = float(value)
    return out


def promotions(doc: Mapping[str, Any] | None) -> list[Promotion]:
    """Every promotion in the audit trails of a /models document's served partitions, oldest
    first (rollbacks, refused and unchanged requests are not promotions)."""
    found = []
    for p in served(doc):
        for change in p.get("changes") or []:
            match = _PROMOTED.fullmatch(str(change.get("outcome", "")))
            if match is None:
                continue
            new, old = (ast.literal_eval(name) for name in match.groups())
            request = str(change.get("request", ""))
            found.append(
                Promotion(
                    p["partition"], change["offset"], new, old, request, change.get("time"), _rolling(p)
                )
            )
    return sorted(found, key=lambda pr: (pr.time or 0.0, pr.partition, pr.offset))


def new_promotions(doc: Mapping[str, Any] | None, seen: set[tuple[int, int]]) -> list[Promotion]:
    """The promotions of `doc` whose key is not in `seen`, which learns them."""
    fresh = [pr for pr in promotions(doc) if pr.key not in seen]
    seen.update(pr.key for pr in fresh)
    return fresh


def format_promotion(pr: Promotion) -> str:
    """One line: the partition, at which offset, from which model to which, and what decided it
    (the rule's lead, with each model's metric over the window when the demo saw it)."""
    if not pr.request.startswith("rule: "):
        why = f"by request: {pr.request}"
    elif pr.rolling:
        first = sorted(pr.rolling.items(), key=lambda item: (item[0] != pr.new, item[0] != pr.old, item[0]))
        why = f"{pr.request}; when seen: {', '.join(f'{name} {value:.3f}' for name, value in first)}"
    else:
        why = pr.request
    return f"[demo] promotion on partition {pr.partition} at offset {pr.offset}: {pr.old} -> {pr.new} ({why})"


def format_earlier(found: list[Promotion]) -> str:
    """One line for promotions applied before the demo started (the kept state of an earlier run
    in data/worker-N): they did not happen now."""
    parts = sorted({pr.partition for pr in found})
    return (
        f"[demo] {len(found)} promotion{'s' if len(found) != 1 else ''} from before this run (kept "
        f"state) on partition{'s' if len(parts) != 1 else ''} {', '.join(map(str, parts))}; "
        "/models lists them under changes"
    )


def main_metric(metrics: Mapping[str, Any]) -> str | None:
    for name in MAIN_METRICS:
        if metrics.get(name) is not None:
            return name
    return next(iter(metrics), None)


def champion_metrics(partition: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of the partition's champion: its row in `models` (role champion), else the
    summary's `metrics` (which are the champion's as well)."""
    for model in partition.get("models") or []:
        if model.get("role") == "champion":
            return dict(model.get("metrics") or {})
    return dict(partition.get("metrics") or {})


def summary_line(partitions: Iterable[Mapping[str, Any]], rate: float) -> str:
    """The status line of the served partitions (as `served` gives them): events, the mean of
    each partition's champion metric (those that learned), and how many each model champions."""
    parts = list(partitions)
    seen = sum(p["events_seen"] for p in parts)
    learned = [champion_metrics(p) for p in parts if p["events_learned"]]
    metric = next((m for m in map(main_metric, learned) if m), None)
    values = [v for m in learned if (v := m.get(metric or "")) is not None]
    shown = f"{sum(values) / len(values):.3f}" if values else "-"
    champions = Counter(p["model"] for p in parts)
    ranked = sorted(champions.items(), key=lambda item: (-item[1], item[0]))
    return (
        f"[demo] {len(parts)} partitions served, {seen} events scored ({rate:.0f}/s), "
        f"champion {_SHOWN.get(metric or '', metric or 'metric')} {shown} (mean over partitions), "
        f"champions: {', '.join(f'{name} {n}' for name, n in ranked) or '-'}, "
        f"dead letters {sum(p['deadletters'] for p in parts)}"
    )


def _cluster(ports: list[int]) -> dict[str, Any] | None:
    """The cluster view /models from the first worker that answers."""
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=5) as response:
                doc = json.load(response)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("partitions"), list):
            return doc
    return None


def _kafka_running() -> bool:
    return subprocess.run([KAFKA, "status"], capture_output=True).returncode == 0


async def _changelog_empty(settings: Any) -> bool:
    """Whether the broker holds nothing of the snapshot changelog the workers' state continues."""
    from aiokafka import TopicPartition

    from streamapp import kafka_security
    from streamapp.replay import snapshot_changelog

    topic = snapshot_changelog(settings)
    async with kafka_security.consumer(settings) as consumer:
        if topic not in await consumer.topics():
            return True
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(settings.partitions)])
        return not any(ends.values())


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


def _interrupted(signum: int, frame: Any) -> None:
    # Once: `timeout` signals the demo and then its whole process group, the demo included.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch(ports: list[int], procs: list[subprocess.Popen[bytes]]) -> None:
    """Until a process exits: each new promotion as /models shows it, and the status line."""
    since = time.time()
    seen: set[tuple[int, int]] = set()
    last: tuple[float, int] | None = None  # when and how many events were seen, for the rate
    next_status = time.monotonic() + STATUS_EVERY_S
    while all(p.poll() is None for p in procs):
        time.sleep(POLL_S)
        doc = _cluster(ports)
        fresh = new_promotions(doc, seen)
        earlier = [pr for pr in fresh if pr.time is not None and pr.time < since]
        if earlier:
            print(format_earlier(earlier), flush=True)
        for promotion in fresh:
            if promotion not in earlier:
                print(format_promotion(promotion), flush=True)
        now, partitions = time.monotonic(), served(doc)
        events = sum(p["events_seen"] for p in partitions)
        if last is None and partitions:
            last = (now, events)  # kept state of an earlier run has counted events already
        if now >= next_status:
            rate = max(0.0, (events - last[1]) / (now - last[0])) if last and now > last[0] else 0.0
            print(summary_line(partitions, rate), flush=True)
            last, next_status = ((now, events) if partitions else None), now + STATUS_EVERY_S


def main() -> int:
    # `timeout`, a closed terminal or `kill` stop the workers and the producer as Ctrl-C does
    # (they run in sessions of their own and would outlive the demo).
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    workers = int(os.environ.get("WORKERS", "1"))
    os.environ.update(demo_settings(os.environ))
    rate = os.environ.get("RATE", "200")
    avro_format = os.environ.get("FORMAT", "json") == "avro"
    started_kafka = not _kafka_running()
    if started_kafka and subprocess.run([KAFKA, "up"]).returncode != 0:
        return 1
    if avro_format:
        # The registry (Apicurio, in memory) as tools/with_registry.sh would; it stays up.
        if subprocess.run([REGISTRY, "up"]).returncode != 0:
            return 1
        registry_port = os.environ.get("REGISTRY_PORT", "8081")
        os.environ.update(avro_settings(os.environ, f"http://127.0.0.1:{registry_port}/apis/ccompat/v7"))
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
        if started_kafka or asyncio.run(_changelog_empty(settings)):
            # A fresh broker (started here, or reset since the last run) has none of the old
            # changelogs: old worker state would not match it (Faust's ConsistencyError).
            for old in (*(ROOT / "data").glob("worker-*"), *(ROOT / "data").glob("avro-worker-*")):
                if old.is_dir():
                    shutil.rmtree(old)
        (ROOT / "data").mkdir(exist_ok=True)
        os.environ["STREAMAPP_SIGNING_KEY"] = _signing_key()
        for n, port in enumerate(ports, start=1):
            name = f"{'avro-' if avro_format else ''}worker-{n}"  # the Avro demo's app has its own state
            env = {**os.environ, "STREAMAPP_DATADIR": str(ROOT / f"data/{name}")}
            log = open(ROOT / f"data/{name}.log", "ab")  # noqa: SIM115 - the worker owns it
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
                [PYTHON, "-m", "streamapp", "produce", "--dataset", "card", "--rate", rate, "--quiet"]
                + (["--format", "avro"] if avro_format else []),
                start_new_session=True,
            )
        )
        print(
            f"[demo] {workers} worker(s); logs in data/worker-N.log; producing card transactions at {rate}/s"
            + (
                f" as Avro to {settings.events_topic} (schemas: {settings.schema_registry_url})"
                if avro_format
                else ""
            )
        )
        if settings.challengers:
            rule = (
                f"a challenger ahead by more than {settings.promote_margin:g} over the last "
                f"{settings.promote_after} labels takes over"
                if settings.promote_after
                else "off (STREAMAPP_PROMOTE_AFTER=0)"
            )
            print(
                f"[demo] champion {settings.model}, challenger(s) {', '.join(settings.challengers)}; "
                f"promotion rule: {rule}"
            )
        print(f"[demo] dashboard: http://127.0.0.1:{ports[0]}/   (any worker serves the whole cluster)")
        print(f"[demo] web views: http://127.0.0.1:{ports[0]}/models   /metrics   /health   /ready")
        print("[demo] Ctrl-C stops everything", flush=True)
        _watch(ports, procs)
        print("[demo] a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[demo] stopping...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
