"""Champion and challenger live: side-by-side metrics equal River's for each model alone; a
promotion and a rollback requested over HTTP become events of the partition's log, need the
token, and leave the models exactly where River's replay of that log puts them, also after a
crash."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from streamapp import models
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.chaos import PROBES, as_json
from tests.integration.cluster import Worker, read_topic, running, unique_env
from tests.oracle import river_on_log

TOKEN = "challenger-test-token-0123456789"


def call(worker: Worker, path: str, doc: Any, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=json.dumps(doc).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def probe(worker: Worker, partition: int) -> list[Any]:
    return [p["proba"] for p in call(worker, f"/models/{partition}/predict", {"x": PROBES})[1]["predictions"]]


def test_challengers_promotion_and_rollback_end_to_end(tmp_path: Path) -> None:
    env = unique_env(
        2,
        challengers="naive_bayes",
        api_token=TOKEN,
        snapshot_every_events="150",
        snapshot_every_seconds="600",
        snapshots_kept="3",
    )
    settings = Settings.from_env(env)
    build = {name: models.resolve(name).build for name in ("hoeffding_tree", "naive_bayes")}
    asyncio.run(produce(settings, "card", rate=0, limit=1000, progress=False))
    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, 2)

        # Side by side: each model's metrics are River's for that model alone on the partition.
        logs = {
            p: [orjson.loads(r.value) for r in rs] for p, rs in read_topic(settings.events_topic, 2).items()
        }
        for p, state in served.items():
            assert [(m["name"], m["role"]) for m in state["models"]] == [
                ("hoeffding_tree", "champion"),
                ("naive_bayes", "challenger"),
            ]
            for m in state["models"]:
                expected, _, _ = river_on_log(logs[p], build[m["name"]], ["rocauc", "accuracy"])
                assert {k: m["metrics"][k] for k in expected} == expected, (p, m["name"])
        shadows = {
            p: {orjson.loads(r.value)["offset"]: orjson.loads(r.value) for r in rs}
            for p, rs in read_topic(settings.predictions_topic, 2).items()
        }
        _, naive_bayes_steps, _ = river_on_log(logs[0], build["naive_bayes"], [])
        assert len(naive_bayes_steps) == len(shadows[0]) > 0
        assert all(
            shadows[0][o]["challengers"]["naive_bayes"]["proba"] == as_json(naive_bayes_steps[o])
            for o in naive_bayes_steps
        )

        # Changes need the token; bad ones are refused with the reason.
        assert call(worker, "/models/0/promote", {"model": "naive_bayes"}, token=None)[0] == 401
        assert call(worker, "/models/0/promote", {"model": "naive_bayes"}, token="wrong")[0] == 401
        assert call(worker, "/models/0/rollback", {"seq": 1}, token=None)[0] == 401
        status, answer = call(worker, "/models/0/promote", {"model": "srp"})
        assert status == 404 and "no model 'srp'" in answer["error"]

        status, answer = call(worker, "/models/0/promote", {"model": "naive_bayes"})
        assert status == 200, answer
        assert answer["outcome"] == "promoted 'naive_bayes' over 'hoeffding_tree'"
        promoted_at = answer["offset"]
        assert answer["model"]["name"] == "naive_bayes"

        asyncio.run(produce(settings, "card", rate=0, limit=400, seed=7, progress=False))
        worker.wait_caught_up(settings.events_topic, 2)
        kept = worker.get("/models/0/snapshots")["snapshots"]
        assert len(kept) == 3, kept
        oldest = kept[-1]
        status, answer = call(worker, "/models/0/rollback", {"seq": oldest["seq"] + 100})
        assert status == 404 and "keeps no snapshot" in answer["error"]
        status, answer = call(worker, "/models/0/rollback", {"seq": oldest["seq"]})
        assert status == 200, answer
        assert answer["outcome"] == f"rolled back to snapshot #{oldest['seq']} (offset {oldest['offset']})"
        rolled_back_at = answer["offset"]

        asyncio.run(produce(settings, "card", rate=0, limit=400, seed=8, progress=False))
        served = worker.wait_caught_up(settings.events_topic, 2)
        changes = served[0]["changes"]
        assert [c["offset"] for c in changes] == [promoted_at, rolled_back_at]
        assert served[0]["rollbacks"] == 1

        # The models are River's, trained on the log up to the snapshot, then after the rollback.
        log0 = [orjson.loads(r.value) for r in read_topic(settings.events_topic, 2)[0]]
        assert log0[promoted_at]["control"] == "promote" and log0[rolled_back_at]["control"] == "rollback"
        learned = [
            d for o, d in enumerate(log0) if "x" in d and (o <= oldest["offset"] or o > rolled_back_at)
        ]
        offline = {}
        for name, factory in build.items():
            offline[name] = factory()
            for d in learned:
                offline[name].learn_one(d["x"], d["y"])
        champion = "naive_bayes" if oldest["offset"] >= promoted_at else "hoeffding_tree"
        assert served[0]["model"] == champion
        assert probe(worker, 0) == [as_json(offline[champion].predict_proba_one(x)) for x in PROBES]

        # Which model made each prediction of partition 0, and partition 1 never changed.
        outputs = {
            p: [orjson.loads(r.value) for r in rs]
            for p, rs in read_topic(settings.predictions_topic, 2).items()
        }
        for doc in outputs[0]:
            if promoted_at < doc["offset"] < rolled_back_at:
                assert doc["model"]["name"] == "naive_bayes"
            elif doc["offset"] < promoted_at:
                assert doc["model"]["name"] == "hoeffding_tree"
            elif doc["offset"] > rolled_back_at:
                assert doc["model"]["name"] == champion and doc["model"]["rollbacks"] == 1
        assert all(doc["model"]["name"] == "hoeffding_tree" for doc in outputs[1])
        before = probe(worker, 0)
        worker.stop(signal.SIGKILL)

    # Recovery after a crash: from the snapshot the rollback took, plus the replayed tail.
    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, 2)
        assert served[0]["model"] == champion and served[0]["rollbacks"] == 1
        assert probe(worker, 0) == before
