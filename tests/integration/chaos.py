"""Several workers, a continuous stream, faults; then the exactness check of every partition."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from streamapp import datasets, models, records
from streamapp.settings import Settings
from tests.integration.cluster import (
    ROOT,
    Worker,
    committed_offsets,
    end_offsets,
    read_topic,
    start_all,
    wait_for,
)
from tests.oracle import river_on_log

PROBES = [s.x for s in datasets.load("card", seed=7, limit=40)]


class Cluster:
    """Named workers of one app; a restarted worker keeps its name, data directory and port."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.root = root
        self.workers: dict[str, Worker] = {}

    def start(self, name: str) -> Worker:
        (worker,) = self.start_all(name)
        return worker

    def start_all(self, *names: str) -> list[Worker]:
        """Start the named workers side by side."""
        workers = [self.workers.get(name) or Worker(self.env, self.root / name) for name in names]
        self.workers.update(zip(names, workers, strict=True))
        return start_all(workers)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.workers[name].stop(sig)

    def wipe(self, name: str) -> None:
        shutil.rmtree(self.workers[name].datadir, ignore_errors=True)

    def stop_all(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    def served(self) -> dict[int, tuple[dict[str, Any], Worker]]:
        out: dict[int, tuple[dict[str, Any], Worker]] = {}
        for worker in self.workers.values():
            if worker.alive():
                for partition, state in worker.models().items():
                    out[partition] = (state, worker)
        return out

    def logs(self) -> str:
        return "\n\n".join(f"--- {name}\n{w.log_tail(40)}" for name, w in self.workers.items())


def start_producer(
    env: dict[str, str], events: int, rate: int, label_delay: int = 0
) -> subprocess.Popen[bytes]:
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (kept open with the process: its traceback)
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamapp",
            "produce",
            "--dataset",
            "card",
            "--rate",
            str(rate),
            "--limit",
            str(events),
            "--label-delay",
            str(label_delay),
            "--quiet",
        ],
        env={**os.environ, **env},
        cwd=ROOT,
        stderr=errors,
    )
    producer.error_log = errors  # type: ignore[attr-defined]
    return producer


def producer_error(producer: subprocess.Popen[bytes]) -> str:
    """The end of what a producer started by `start_producer` wrote to stderr."""
    errors = producer.error_log  # type: ignore[attr-defined]
    errors.seek(0)
    return str(errors.read().decode(errors="replace")[-3000:])


def post(worker: Worker, path: str, doc: Any) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}",
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def as_json(value: Any) -> Any:
    """A prediction as it reads after a trip through the predictions topic."""
    return orjson.loads(records.encode(value))


def river_on_partition(
    model: str, docs: list[dict[str, Any] | None]
) -> tuple[dict[str, float], dict[int, Any], Any]:
    """River on one partition's log (tests.oracle.river_on_log), for a process of its own."""
    return river_on_log(docs, models.resolve(model).build, ["rocauc", "accuracy"])


def label_counts(docs: list[dict[str, Any]]) -> dict[str, int]:
    """What a partition must count for its log: events, events learned (labelled inline or by a
    late label after them), late labels that found their event, and labels whose event was not
    waiting (none seen yet, or labelled already)."""
    counts = dict.fromkeys(("events_seen", "events_learned", "labels_late", "labels_unknown"), 0)
    waiting: set[str] = set()
    for doc in docs:
        if "x" in doc:
            counts["events_seen"] += 1
            waiting.discard(doc["id"])  # a label goes to the newest event of its id
            if doc.get("y") is None:
                waiting.add(doc["id"])
            else:
                counts["events_learned"] += 1
        elif doc["id"] in waiting:
            waiting.discard(doc["id"])
            counts["events_learned"] += 1
            counts["labels_late"] += 1
        else:
            counts["labels_unknown"] += 1
    return counts


def assert_exact(
    cluster: Cluster,
    settings: Settings,
    timeout: float = 180,
    decode: Callable[[ConsumerRecord[bytes, bytes]], dict[str, Any] | None] | None = None,
    log_topic: str | None = None,
    read_prediction: Callable[[bytes], dict[str, Any]] = orjson.loads,
) -> dict[int, dict[int, int]]:
    """Every partition: all its events learned once, in order, as River learns them offline.
    Returns {partition: {offset: copies}} of the prediction records a consumer of the guarantee's
    isolation level reads (read_committed with exactly_once).

    `decode`: a record of the events topic as the contract's document ({"id", "x", "y"}), read
    independently of streamapp's decoding; None for one the worker must dead-letter or skip as a
    duplicate. `log_topic`: the partitions' log, if not the events topic (the sequence topic).
    `read_prediction`: a prediction record as its JSON document (Avro ones need the schema)."""
    decode = decode or (lambda record: orjson.loads(record.value))
    partitions = settings.partitions
    log_topic = log_topic or settings.events_topic
    ends = end_offsets(log_topic, partitions)
    assert len(ends) == partitions and sum(ends.values()) > 0, f"{log_topic}: {ends}"

    def caught_up() -> bool:
        served = cluster.served()
        return all(
            served.get(p, ({}, None))[0].get("offset_applied", -1) == end - 1 for p, end in ends.items()
        )

    wait_for("every partition to apply every event", caught_up, timeout, cluster.logs)
    if settings.processing_guarantee == "exactly_once":
        # The outputs of the last events become visible when their transaction commits.
        def visible() -> bool:
            committed = committed_offsets(settings.app_id, settings.events_topic)
            return all(committed.get(p, 0) == end for p, end in ends.items())

        wait_for("the last transactions to commit", visible, 30, cluster.logs)
    served = cluster.served()
    logs = {p: [decode(r) for r in recs] for p, recs in read_topic(log_topic, partitions).items()}
    events = {p: {o for o, d in enumerate(docs) if d is not None and "x" in d} for p, docs in logs.items()}
    isolation = "read_committed" if settings.processing_guarantee == "exactly_once" else "read_uncommitted"
    predictions: dict[int, dict[int, list[dict[str, Any]]]] = {}

    def all_written() -> bool:
        nonlocal predictions
        predictions = defaultdict(lambda: defaultdict(list))
        for recs in read_topic(settings.predictions_topic, partitions, isolation).values():
            for rec in recs:
                doc = read_prediction(rec.value)
                predictions[doc["partition"]][doc["offset"]].append(doc)
        return all(offsets <= set(predictions[p]) for p, offsets in events.items())

    # The last events' predictions may still be on their way (a partition leader that just moved
    # back makes the producer retry): wait for them. One really lost stays missing, and fails below.
    with contextlib.suppress(AssertionError):
        wait_for("the predictions of every event", all_written, 30)
    # River's offline runs, one per partition, side by side (an adaptive random forest's take seconds).
    with ProcessPoolExecutor(min(partitions, os.cpu_count() or 1), mp_context=get_context("fork")) as pool:
        oracles = dict(
            zip(logs, pool.map(river_on_partition, repeat(settings.model), logs.values()), strict=True)
        )

    for partition, docs in logs.items():
        kept = [d for d in docs if d is not None]
        state, owner = served[partition]
        where = f"partition {partition} on {owner.datadir.name}"
        counts = {k: state[k] for k in ("events_seen", "events_learned", "labels_late", "labels_unknown")}
        assert counts == label_counts(kept), f"{where}: {state}"
        skipped = state["deadletters"] + state["duplicates"]
        assert skipped == len(docs) - len(kept), f"{where}: the refused and repeated records"
        # Faust drops a few events around rebalances; the guard refuses to learn across such a
        # gap and seeks back (counted in "gaps"); what matters is that the model never missed one.
        assert state["events_lost_to_retention"] == 0, where
        expected, river, offline = oracles[partition]
        got = {k: state["metrics"][k] for k in expected}
        assert got == expected, f"{where}: metrics differ from River's on the sub-stream"

        answer = post(owner, f"/models/{partition}/predict", {"x": PROBES})["predictions"]
        assert [a["proba"] for a in answer] == [as_json(offline.predict_proba_one(x)) for x in PROBES], (
            f"{where}: the served model is not River's model trained offline on the sub-stream"
        )

        # Every event has a prediction, and every copy is River's own at that step.
        missing = sorted(set(river) - set(predictions[partition]))
        extra = sorted(set(predictions[partition]) - set(river))
        assert not missing and not extra, (
            f"{where}: no prediction at {missing[:20]}, one at non-events {extra[:20]}"
        )
        for offset, docs_at in predictions[partition].items():
            for doc in docs_at:
                assert doc["proba"] == as_json(river[offset]), f"{where} offset {offset}"
    return {p: {o: len(copies) for o, copies in at.items()} for p, at in predictions.items()}


def run_stream(
    env: dict[str, str], events: int, rate: int, script: list[tuple[float, Any]], label_delay: int = 0
) -> None:
    """Produce `events` at `rate` (labels `label_delay` events late); run each (seconds after
    start, action) of the script on time."""
    producer = start_producer(env, events, rate, label_delay)
    started = time.monotonic()
    try:
        for at, action in script:
            delay = at - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
            action()
        code = producer.wait(timeout=(events / rate if rate else 0) + 120)
        assert code == 0, f"the producer failed ({code}):\n{producer_error(producer)}"
    finally:
        if producer.poll() is None:
            producer.kill()
