"""The web surface with three workers: any worker answers for the cluster, scores any key,
serves Prometheus metrics, and says which partitions are unknown when an owner dies."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamapp import snapshot
from streamapp.settings import Settings
from streamapp.signing import Signer
from streamapp.web import partition_of
from tests.integration.chaos import Cluster, run_stream
from tests.integration.cluster import Worker, read_topic, unique_env, wait_for

PARTITIONS = 6
TOKEN = "s3cret-token-for-the-web-tests"
PROBE = {
    "amount": 120.5,
    "merchant_category": "travel",
    "hour": 3,
    "distance_from_home_km": 410.0,
    "velocity_1h": 4,
    "online": True,
}


def call(
    worker: Worker, method: str, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(worker: Worker, path: str) -> Any:
    status, body = call(worker, "GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One cluster for the module (starting three workers is most of its time): the tests only
    read it, except the promotion (which every later test tolerates) and the dead owner's, last."""
    tmp_path = tmp_path_factory.mktemp("web")
    env = unique_env(
        PARTITIONS,
        api_token=TOKEN,
        session_timeout="6",
        snapshot_every_events="100",
        challengers="naive_bayes",
    )
    c = Cluster(env, tmp_path)
    for name in ("w1", "w2", "w3"):
        c.start(name)

    def spread() -> bool:
        # Every worker has joined and got some partitions (the first one has them all at first).
        owners = {w.datadir.name for _, w in c.served().values()}
        return len(owners) == 3 and all((w.get("/ready") or {}).get("ready") for w in c.workers.values())

    wait_for("the partitions to spread over the three workers", spread, 90, c.logs)
    run_stream(env, events=1500, rate=0, script=[])

    def all_caught_up() -> bool:
        served = c.served()
        return len(served) == PARTITIONS and sum(s["events_seen"] for s, _ in served.values()) == 1500

    wait_for("three workers to serve every partition and apply every event", all_caught_up, 120, c.logs)
    yield c
    c.stop_all()


def test_any_worker_answers_for_the_cluster_and_scores_any_key(cluster: Cluster) -> None:
    settings = Settings.from_env(cluster.env)
    served = cluster.served()
    owner_of = {p: url(w) for p, (_, w) in served.items()}
    workers = list(cluster.workers.values())
    assert len(set(owner_of.values())) >= 2, f"the partitions should spread over workers: {owner_of}"

    for worker in workers:
        doc = get_json(worker, "/models")
        assert [p["partition"] for p in doc["partitions"]] == list(range(PARTITIONS))
        for p in doc["partitions"]:
            assert p["status"] == "served", (p, {url(w): sorted(w.models()) for w in workers})
            assert p["owner"] == owner_of[p["partition"]]
            assert p["model"] == "hoeffding_tree" and p["snapshot"]["seq"] >= 1
            assert p["drift"] == served[p["partition"]][0]["drift"], "the owner's own drift record"
        assert all(w["ok"] for w in doc["workers"].values())
        assert get_json(worker, "/ready")["ready"] is True
        assert get_json(worker, "/health") == {"status": "ok"}

    # /predict routes a key as the producers do, and every worker gives the owner's answer.
    events = read_topic(settings.events_topic, PARTITIONS)
    keys = {r.key.decode(): p for p, records in events.items() for r in records[:3]}
    for key, partition in keys.items():
        assert partition_of(key, PARTITIONS) == partition
        body = json.dumps({"key": key, "x": PROBE}).encode()
        answers = []
        for worker in workers:
            status, raw = call(worker, "POST", "/predict", body)
            assert status == 200, raw
            answers.append(json.loads(raw))
        assert {a["partition"] for a in answers} == {partition}
        assert {a["owner"] for a in answers} == {owner_of[partition]}
        assert all(a["prediction"] == answers[0]["prediction"] for a in answers)
        owner = next(w for w in workers if url(w) == owner_of[partition])
        direct = json.loads(
            call(owner, "POST", f"/models/{partition}/predict", json.dumps({"x": [PROBE]}).encode())[1]
        )
        assert answers[0]["prediction"] == direct["predictions"][0]

    # Detail and snapshot download through a worker that does not own the partition.
    partition = 0
    other = next(w for w in workers if url(w) != owner_of[partition])
    detail = get_json(other, f"/models/{partition}")
    assert detail["worker"] == owner_of[partition] and detail["memory_bytes"] > 0
    assert "grace_period" in detail["parameters"]
    assert call(other, "GET", f"/models/{partition}/snapshot")[0] == 401
    assert call(other, "GET", f"/models/{partition}/snapshot", token="wrong")[0] == 401
    status, blob = call(other, "GET", f"/models/{partition}/snapshot", token=TOKEN)
    assert status == 200
    signer = Signer.from_settings(Settings.from_env(cluster.env))
    header, _ = snapshot.decode(blob, signer, partition)  # signed by the workers' key
    assert header.partition == partition and header.offset == detail["snapshot"]["offset"]


def test_bad_requests_get_clear_4xx_answers_and_the_worker_serves_on(cluster: Cluster) -> None:
    worker = cluster.workers["w1"]
    bad = [
        ("GET", "/models/99", None, 404, "partitions are 0..5"),
        ("GET", "/models/abc", None, 404, "no partition"),
        ("POST", "/predict", b"{not json", 400, "must be JSON"),
        ("POST", "/predict", b'{"x": {"amount": 1}}', 400, "'key' must be a string"),
        ("POST", "/predict", b'{"key": "card-1", "x": [1, 2]}', 400, "'x' must be an object"),
        ("POST", "/predict", b'{"key": "card-1", "x": {"amount": [1, 2]}}', 400, "feature 'amount' must be"),
        ("POST", "/models/1/predict", b'{"x": {"amount": 1}}', 400, "'x' must be a list"),
    ]
    for method, path, body, status, reason in bad:
        got, raw = call(worker, method, path, body)
        assert got == status, (path, body, got, raw)
        assert reason in json.loads(raw)["error"], (path, raw)
    assert get_json(worker, "/health") == {"status": "ok"} and worker.alive()


def test_metrics_parse_and_name_every_series(cluster: Cluster) -> None:
    worker = cluster.workers["w2"]
    status, raw = call(worker, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
    wanted = {
        "streamapp_events": "counter",
        "streamapp_predictions": "counter",
        "streamapp_deadletters": "counter",
        "streamapp_drifts": "counter",
        "streamapp_predict_latency_seconds": "histogram",
        "streamapp_learn_latency_seconds": "histogram",
        "streamapp_end_to_end_latency_seconds": "histogram",
        "streamapp_model_metric": "gauge",
        "streamapp_snapshot_age_seconds": "gauge",
        "streamapp_snapshot_size_bytes": "gauge",
        "streamapp_consumer_lag_events": "gauge",
        "process_resident_memory_bytes": "gauge",
    }
    for name, kind in wanted.items():
        assert name in families and families[name].type == kind, name
    assert any(name.startswith("faust_") for name in families), "Faust's own sensor metrics"
    served = set(cluster.workers["w2"].models())
    events = {
        s.labels["partition"]: s.value
        for s in families["streamapp_events"].samples
        if s.name.endswith("_total")
    }
    assert {int(p) for p in events} == served and sum(events.values()) > 0
    # Each partition's latency histogram counted every prediction it emitted, and nothing else.
    predictions = {
        s.labels["partition"]: s.value
        for s in families["streamapp_predictions"].samples
        if s.name.endswith("_total")
    }
    observed = {
        s.labels["partition"]: s.value
        for s in families["streamapp_end_to_end_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
    }
    assert observed == predictions == events
    lags = [s.value for s in families["streamapp_consumer_lag_events"].samples]
    assert lags and all(lag == 0 for lag in lags), "caught up: nothing behind"
    metrics = {s.labels["metric"] for s in families["streamapp_model_metric"].samples}
    assert {"rocauc", "accuracy"} <= metrics


def test_a_model_is_promoted_on_every_partition_from_any_worker(cluster: Cluster) -> None:
    """One request to one worker: each partition's owner writes and applies its own control
    event, and the answer gives every partition's outcome."""
    w1 = cluster.workers["w1"]
    body = json.dumps({"model": "naive_bayes"}).encode()
    assert call(w1, "POST", "/promote", body)[0] == 401
    status, answer = call(w1, "POST", "/promote", body, token=TOKEN)
    assert status == 200, answer
    outcomes = {a["partition"]: a["outcome"] for a in json.loads(answer)["partitions"]}
    assert outcomes == {p: "promoted 'naive_bayes' over 'hoeffding_tree'" for p in range(PARTITIONS)}
    served = cluster.served()
    assert {w.datadir.name for _, w in served.values()} == {"w1", "w2", "w3"}
    for partition, (state, _) in served.items():
        assert state["model"] == "naive_bayes", partition
        assert [c["request"] for c in state["changes"]] == ["promote naive_bayes"]
    status, answer = call(w1, "POST", "/promote", json.dumps({"model": "srp"}).encode(), token=TOKEN)
    # Every partition refuses alike: that status, not a 207 "mix".
    refused = json.loads(answer)
    assert status == 404 and {a["status"] for a in refused["partitions"]} == {404}, answer
    assert "no model 'srp'" in refused["error"]


def test_a_dead_owner_s_partitions_are_reported_unavailable_then_served_again(cluster: Cluster) -> None:
    victim = cluster.workers["w3"]
    lost = set(victim.models())
    assert lost, "w3 serves some partitions"
    cluster.stop("w3", signal.SIGKILL)
    doc = get_json(cluster.workers["w1"], "/models")
    gone = {p["partition"]: p for p in doc["partitions"] if p["status"] == "unavailable"}
    assert set(gone) == lost
    assert all(url(victim) in p["reason"] and "does not answer" in p["reason"] for p in gone.values())
    assert doc["workers"][url(victim)]["ok"] is False

    survivors = {url(cluster.workers["w1"]), url(cluster.workers["w2"])}

    def served_by_survivors() -> bool:
        partitions = get_json(cluster.workers["w2"], "/models")["partitions"]
        return all(p["status"] == "served" and p["owner"] in survivors for p in partitions)

    wait_for("the survivors to serve every partition", served_by_survivors, 90, cluster.logs)
