"""The web views in-process, without Kafka or worker processes: a Faust app's aiohttp server with
the views mounted on a context of fakes (real partition states, a fake cluster and snapshot
source), driven by aiohttp's test client."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streamapp import control, datasets, models, peers, producer, records, replay, snapshot
from streamapp.histogram import Histogram
from streamapp.partition import PartitionState
from streamapp.settings import Settings
from streamapp.signing import Signer
from streamapp.web import explain, mount, partition_of
from streamapp.web.context import WebContext
from tests.processor_harness import TOPIC, Harness

PARTITIONS = 4
API_TOKEN = "unit-api-token-0123456789abcdef"
READ_TOKEN = "unit-read-token-0123456789abcde"
KEY = "unit-signing-key-0123456789abcdef0123"
ME = "http://127.0.0.1:7001"
OTHER = "http://127.0.0.1:7002"
EVENTS = 300
LAG = 7


def settings(**env: str) -> Settings:
    base = {
        "STREAMAPP_PARTITIONS": str(PARTITIONS),
        "STREAMAPP_SIGNING_KEY": KEY,
        "STREAMAPP_API_TOKEN": API_TOKEN,
        "STREAMAPP_READ_TOKEN": READ_TOKEN,
    }
    return Settings.from_env({**base, **env})


def trained_state(partition: int) -> PartitionState:
    """A partition with a champion and a challenger, both fed EVENTS labelled events."""
    spec = models.resolve("hoeffding_tree", "binary")
    challenger = models.resolve("logistic_regression", "binary")
    state = PartitionState(partition, spec, challengers=[challenger])
    rng = random.Random(partition)
    for offset in range(EVENTS):
        x = {"a": rng.uniform(0, 10), "b": rng.uniform(0, 10)}
        state.apply_event(records.Event(id=f"e{offset}", x=x, y=x["a"] > 5, ts=None), offset)
    return state


def header(partition: int, seq: int) -> snapshot.Header:
    return snapshot.Header(
        3,
        partition,
        seq * 100,
        seq,
        1_700_000_000.0 + seq,
        "hoeffding_tree",
        "0.26",
        "3.11",
        10 * seq,
        ["hoeffding_tree"],
    )


@dataclass
class Timing:
    predict: Histogram = field(default_factory=Histogram)
    learn: Histogram = field(default_factory=Histogram)
    end_to_end: Histogram = field(default_factory=Histogram)
    predictions: int = 0
    alerts: int = 0


@dataclass
class FakeServing:
    """The processor's serving side: real states, snapshots from a dict."""

    signer: Signer
    states: dict[int, PartitionState]
    snapshots: dict[int, list[tuple[snapshot.Header, bytes]]] = field(default_factory=dict)
    timings: dict[int, Timing] = field(default_factory=dict)

    def kept_snapshots(self, partition: int) -> list[tuple[snapshot.Header, bytes]]:
        return self.snapshots.get(partition, [])

    def kept_headers(self, partition: int) -> list[snapshot.Header]:
        return [h for h, _ in self.kept_snapshots(partition)]


@dataclass
class FakeCluster:
    """Owners as the test sets them; what each owner answers, by path; every request asked."""

    me: str = ME
    owned: dict[int, str] = field(default_factory=dict)
    answers: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    asked: list[tuple[str, str, str, bytes | None, float | None]] = field(default_factory=list)

    def owners(self) -> dict[int, str]:
        return dict(self.owned)

    async def ask(
        self, url: str, method: str, path_qs: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes, str]:
        self.asked.append((url, method, path_qs, body, timeout))
        return self.answers[path_qs]


@dataclass
class Written:
    """The control events written; each is applied to the state at once, as the processor would."""

    states: dict[int, PartitionState]
    events: list[tuple[str, int, records.Control, list[tuple[str, bytes]]]] = field(default_factory=list)

    async def __call__(
        self, topic: str, partition: int, value: bytes, headers: list[tuple[str, bytes]]
    ) -> int:
        event = records.parse(value)
        assert isinstance(event, records.Control)
        self.events.append((topic, partition, event, headers))
        state = self.states[partition]
        offset = state.offset + 1
        state.apply(offset, event, at=time.time())
        return offset


@dataclass
class Web:
    client: TestClient[Any, Any]
    context: WebContext
    serving: FakeServing
    cluster: FakeCluster
    written: Written


def read(token: str = READ_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def served(config: Settings) -> AsyncIterator[Web]:
    signer = Signer.from_settings(config)
    states = {0: trained_state(0), 1: trained_state(1)}
    serving = FakeServing(signer, states, {0: [(header(0, 2), b"second"), (header(0, 1), b"first")]})
    serving.timings[0] = Timing(predictions=5, alerts=1)
    cluster = FakeCluster()
    written = Written(states)
    context = WebContext(
        serving=serving,
        settings=config,
        cluster=cluster,
        verifier=peers.PeerVerifier(signer),
        lag=lambda partition: LAG,
        source_topic=lambda partition: "events",
        ready=lambda: (True, "ok"),
        write_control=written,
    )
    app = faust.App(f"web-views-{time.monotonic_ns()}", web_enabled=True)
    mount(app, context)
    async with TestClient(TestServer(cast(AiohttpWeb, app.web).web_app)) as client:
        yield Web(client, context, serving, cluster, written)


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    async for one in served(settings()):
        yield one


async def answer(response: Any) -> tuple[int, Any]:
    return response.status, json.loads(await response.read())


# -- paths and access -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["4", "99", "x", "-1", "²"])
async def test_a_partition_that_does_not_exist_is_404(web: Web, raw: str) -> None:
    status, body = await answer(await web.client.get(f"/models/{raw}", headers=read()))
    assert status == 404
    assert body == {"error": f"no partition {raw!r}: partitions are 0..3"}
    status, _ = await answer(await web.client.post(f"/models/{raw}/predict", json={"x": []}, headers=read()))
    assert status == 404
    assert web.cluster.asked == []


async def test_reads_need_the_read_or_api_token(web: Web) -> None:
    response = await web.client.get("/models/0")
    status, body = await answer(response)
    assert status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="streamapp"'
    assert "STREAMAPP_READ_TOKEN" in body["error"]
    assert (await web.client.get("/models/0", headers=read("Bearer-less wrong token value"))).status == 401
    assert (await web.client.get("/models/0", headers=read())).status == 200
    assert (await web.client.get("/models/0", headers=read(API_TOKEN))).status == 200
    assert (await web.client.get("/health")).status == 200  # open


async def test_changes_need_the_api_token(web: Web) -> None:
    status, body = await answer(
        await web.client.post("/models/0/promote", json={"model": "logistic_regression"}, headers=read())
    )
    assert status == 401
    assert body == {"error": "a valid 'Authorization: Bearer <STREAMAPP_API_TOKEN>' header is required"}
    assert web.written.events == []


async def test_changes_are_refused_403_while_no_api_token_is_configured() -> None:
    async for web in served(settings(STREAMAPP_API_TOKEN="")):
        response = await web.client.post("/models/0/promote", json={"model": "x"}, headers=read(API_TOKEN))
        status, body = await answer(response)
        assert status == 403
        assert body["error"].startswith("refused: set STREAMAPP_API_TOKEN")


async def test_a_path_outside_the_api_is_a_json_404(web: Web) -> None:
    status, body = await answer(await web.client.get("/router"))
    assert status == 404
    assert body == {"error": "no such path: '/router' (the API is described at /openapi.json)"}


# -- models ---------------------------------------------------------------------------------


async def test_one_partition_in_detail(web: Web) -> None:
    status, body = await answer(await web.client.get("/models/0", headers=read()))
    assert status == 200
    assert body["partition"] == 0
    assert body["worker"] == ME
    assert body["model"] == "hoeffding_tree"
    assert body["events_seen"] == body["events_learned"] == EVENTS
    assert body["lag"] == LAG
    assert body["predictions"] == 5 and body["alerts"] == 1
    assert set(body["latency"]) == {"predict", "learn", "end_to_end"}
    assert body["parameters"]["grace_period"] == web.serving.states[0].model.grace_period
    assert body["memory_bytes"] > 0
    assert body["snapshot_download"] == "/models/0/snapshot"
    assert web.cluster.asked == []


async def test_models_lists_every_partition_with_why_the_unknown_are_unknown(web: Web) -> None:
    web.cluster.owned = {0: ME, 1: ME, 2: OTHER}
    web.cluster.answers["/models/local"] = (200, b"not json", "application/json")
    status, body = await answer(await web.client.get("/models", headers=read()))
    assert status == 200
    by_partition = {p["partition"]: p for p in body["partitions"]}
    assert [by_partition[p]["status"] for p in range(PARTITIONS)] == [
        "served",
        "served",
        "unavailable",
        "unavailable",
    ]
    assert by_partition[2]["reason"] == "its owner: answered something that is not its partitions"
    assert by_partition[3]["reason"] == "no worker owns it (the group is rebalancing)"
    assert body["workers"][OTHER] == {"ok": False, "error": "answered something that is not its partitions"}


async def test_snapshots_listed_and_downloaded(web: Web) -> None:
    status, body = await answer(await web.client.get("/models/0/snapshots", headers=read()))
    assert status == 200
    assert [(s["seq"], s["offset"], s["bytes"]) for s in body["snapshots"]] == [(2, 200, 20), (1, 100, 10)]
    response = await web.client.get("/models/0/snapshot?seq=1", headers=read(API_TOKEN))
    assert response.status == 200
    assert await response.read() == b"first"
    app_id = web.context.settings.app_id
    assert response.headers["Content-Disposition"] == f'attachment; filename="{app_id}-p0-snapshot1.bin"'
    status, body = await answer(await web.client.get("/models/0/snapshot?seq=7", headers=read(API_TOKEN)))
    assert status == 404
    assert body == {"error": "partition 0 keeps no snapshot 7 (kept: [2, 1])"}
    status, body = await answer(
        await web.client.get("/models/0/snapshot?seq=1&seq=2", headers=read(API_TOKEN))
    )
    assert status == 400 and body == {"error": "query parameter 'seq' given more than once"}


# -- forwarding -----------------------------------------------------------------------------


async def test_a_partition_not_served_here_without_an_owner_is_503(web: Web) -> None:
    status, body = await answer(await web.client.get("/models/2", headers=read()))
    assert status == 503
    assert body == {"error": "partition 2 has no owner right now (rebalancing); retry shortly"}
    assert web.cluster.asked == []


async def test_a_partition_not_served_here_is_asked_of_its_owner_and_relayed(web: Web) -> None:
    web.cluster.owned = {2: OTHER}
    web.cluster.answers["/models/2"] = (200, b'{"partition": 2, "from": "owner"}', "application/json")
    status, body = await answer(await web.client.get("/models/2", headers=read()))
    assert (status, body) == (200, {"partition": 2, "from": "owner"})
    assert web.cluster.asked == [(OTHER, "GET", "/models/2", None, None)]
    web.cluster.answers["/models/2"] = (500, b"{}", "application/json")
    status, body = await answer(await web.client.get("/models/2", headers=read()))
    assert status == 503
    assert body == {"error": f"partition 2: its owner {OTHER!r} answered 500 (application/json)"}


async def test_a_forwarded_request_is_never_forwarded_again(web: Web) -> None:
    web.cluster.owned = {2: OTHER}
    signed = peers.sign_request(web.serving.signer, "GET", "/models/2", b"")
    status, body = await answer(await web.client.get("/models/2", headers=signed))
    assert status == 503
    assert body == {"error": f"partition 2 is not served by {ME!r} (any more)"}
    assert web.cluster.asked == []


# -- scoring --------------------------------------------------------------------------------


async def test_a_probe_scores_as_the_partition_state_predicts(web: Web) -> None:
    state = web.serving.states[1]
    probes = [{"a": 1.5, "b": 9.0}, {"a": 8.5, "b": 0.5}]
    status, body = await answer(
        await web.client.post("/models/1/predict", json={"x": probes}, headers=read())
    )
    assert status == 200
    assert body["predictions"] == [json.loads(json.dumps(state.predict(x))) for x in probes]
    assert body["predictions"][0] != body["predictions"][1]
    assert body["model"]["name"] == "hoeffding_tree"
    key = next(k for k in (f"key-{i}" for i in range(100)) if partition_of(k, PARTITIONS) == 1)
    status, body = await answer(
        await web.client.post("/predict", json={"key": key, "x": probes[1]}, headers=read())
    )
    assert status == 200
    assert (body["partition"], body["owner"]) == (1, ME)
    assert body["prediction"] == json.loads(json.dumps(state.predict(probes[1])))


async def test_a_probe_with_a_feature_of_another_kind_is_422(web: Web) -> None:
    response = await web.client.post(
        "/models/0/predict", json={"x": [{"a": "text", "b": 1.0}]}, headers=read()
    )
    status, body = await answer(response)
    assert status == 422
    assert body["error"].startswith("feature set 0: the model cannot score it: BadEvent")


# -- changes --------------------------------------------------------------------------------


async def test_the_change_service_refuses_a_model_the_partition_does_not_have(web: Web) -> None:
    headers = read(API_TOKEN)
    status, body = await answer(
        await web.client.post("/models/0/promote", json={"model": "nope"}, headers=headers)
    )
    assert status == 404
    assert body == {
        "error": "partition 0 has no model 'nope' (models: ['hoeffding_tree', 'logistic_regression'])"
    }
    status, body = await answer(await web.client.post("/models/0/promote", data=b"[1]", headers=headers))
    assert status == 400
    assert web.written.events == []


async def test_a_promotion_is_written_signed_and_answered_once_applied(web: Web) -> None:
    response = await web.client.post(
        "/models/0/promote", json={"model": "logistic_regression"}, headers=read(API_TOKEN)
    )
    status, body = await answer(response)
    assert status == 200
    assert body["model"]["name"] == "logistic_regression"
    assert body["outcome"] == web.serving.states[0].changes[-1]["outcome"]
    [(topic, partition, event, headers)] = web.written.events
    assert (topic, partition, event.action, event.model) == ("events", 0, "promote", "logistic_regression")
    control.verify(web.serving.signer, 0, event, headers, time.time())  # raises if not signed for p0
    with pytest.raises(records.BadEvent):
        control.verify(web.serving.signer, 1, event, headers, time.time())


async def test_a_rollback_too_soon_after_the_last_is_429(web: Web) -> None:
    web.context.rollback_written[0] = time.time()
    response = await web.client.post("/models/0/rollback", json={"seq": 1}, headers=read(API_TOKEN))
    status, body = await answer(response)
    assert status == 429
    assert response.headers["Retry-After"] == "60"
    assert "rolled back less than 60 s ago" in body["error"]
    assert web.written.events == []


# -- explaining a past decision ---------------------------------------------------------------

AT_MS = 1_800_000_000_000


def record(
    topic: str, offset: int, key: bytes | None, value: bytes | None, headers: Any = ()
) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, AT_MS, 0, key, value, None, 0, 0, tuple(headers))


@dataclass
class Topics:
    """Partition 0 of the topics `streamapp replay` reads, in memory, as a worker's run left
    them: `replay.each_record` reads these instead of Kafka."""

    by_topic: dict[str, list[ConsumerRecord]]
    #: what a read waits for before it starts (a test's hold on an explanation)
    hold: threading.Event | None = None

    async def each_record(
        self,
        settings: Settings,
        topic: str,
        partition: int,
        start: int = 0,
        stop: int | None = None,
        since_ms: int | None = None,
    ) -> AsyncGenerator[ConsumerRecord, None]:
        if self.hold is not None:
            assert self.hold.wait(10)
        log = self.by_topic.get(topic, [])
        if since_ms is not None:
            start = next((r.offset for r in log if r.timestamp >= since_ms), len(log))
        for r in log:
            if r.offset >= start and (stop is None or r.offset < stop):
                yield r


def recorded_topics(run: Harness, config: Settings, copies: Sequence[dict[str, Any]] = ()) -> Topics:
    """The events, the predictions (then `copies`: later records of some offsets) and the
    snapshot changelog of a harness's run, in topics named as `config` names them."""
    changelog = f"{config.app_id}-snapshots-changelog"
    written = [*run.predictions, *copies]
    return Topics(
        {
            TOPIC: [record(TOPIC, o, b"key", v, h) for o, (v, h) in enumerate(run.log)],
            config.predictions_topic: [
                record(config.predictions_topic, o, b"key", records.encode(p)) for o, p in enumerate(written)
            ],
            changelog: [
                record(changelog, o, orjson.dumps(k), blob)
                for o, (k, blob) in enumerate(run.snapshots.items())
            ],
        }
    )


def card_run(events: int, **env: str) -> Harness:
    """A worker's run over `events` card events with labels 10 events late and one bad record
    (in a thread of a test: the harness runs an event loop of its own)."""
    run = Harness.build(**{"snapshot_every_events": "60", "snapshots_kept": "3", "signing_key": KEY, **env})
    values = [v for _, v in producer.messages(datasets.load("card", limit=events), label_delay=10)]
    values[20:20] = [b"not json"]
    run.feed(values, at=AT_MS / 1000)
    return run


def serve_run(
    web: Web, run: Harness, monkeypatch: pytest.MonkeyPatch, topics: Topics | None = None
) -> Topics:
    """Partition 0's owner serves the run's state and keeps its snapshots; its topics are read."""
    web.serving.states[0] = run.state
    web.serving.snapshots[0] = run.processor.kept_snapshots(0)
    topics = topics or recorded_topics(run, web.context.settings)
    monkeypatch.setattr(replay, "each_record", topics.each_record)
    return topics


@pytest.fixture
async def recorded(web: Web, monkeypatch: pytest.MonkeyPatch) -> Harness:
    run = await asyncio.to_thread(card_run, 400)
    serve_run(web, run, monkeypatch)
    return run


async def explained(web: Web, offset: int | str, partition: int = 0) -> tuple[int, Any]:
    return await answer(
        await web.client.get(f"/models/{partition}/explain?offset={offset}", headers=read(API_TOKEN))
    )


async def test_an_explanation_is_what_streamapp_replay_says_for_the_offset(
    web: Web, recorded: Harness
) -> None:
    sampled = random.Random(5).sample([p["offset"] for p in recorded.predictions], 8)
    expected = await replay.replay(web.context.settings, 0, sampled)  # `streamapp replay`'s lines
    for offset, line in zip(sorted(sampled), expected, strict=True):
        status, body = await explained(web, offset)
        assert status == 200, body
        assert body == json.loads(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS))
        assert body["equal"] and body["copies"] == 1 and body["differences"] == []
        assert body["replayed"]["proba"] == body["recorded"]["proba"]
        assert body["explanation"]["kind"] == "decision path"
    assert {r["rebuilt_from"].split(" (")[0] for r in expected} > {"the start of the log"}


async def test_every_copy_of_a_prediction_record_is_compared_with_the_replay(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await asyncio.to_thread(card_run, 200)
    first, second = run.predictions[50], run.predictions[60]
    again = {**first, "replayed": True}  # written again by a worker that replayed it: the same
    changed = {**second, "replayed": True, "proba": {"False": 0.5, "True": 0.5}}
    serve_run(web, run, monkeypatch, recorded_topics(run, web.context.settings, [again, changed]))
    status, body = await explained(web, first["offset"])
    assert (status, body["copies"], body["equal"]) == (200, 2, True)
    assert body["recorded"] == first, "the first copy written is the one reported"
    status, body = await explained(web, second["offset"])
    assert (status, body["copies"], body["equal"]) == (200, 2, False)
    assert body["recorded"] == second
    assert [d.split(": ")[0] for d in body["differences"]] == ["copy 2 of 2 (replayed)"]


async def test_an_explanation_holds_the_event_loop_only_briefly(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6,000 events replayed in the explanation's thread, which lets go of the GIL every 0.5 ms:
    the worker's loop runs on (a turn took 5 ms, up to 73 ms, when the thread kept the GIL)."""
    run = await asyncio.to_thread(card_run, 6000, snapshot_every_events="100000")  # from the log's start
    serve_run(web, run, monkeypatch)
    last = run.predictions[-1]["offset"]
    stalls: list[float] = []

    async def heartbeat() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - before - 0.001)

    beating = asyncio.ensure_future(heartbeat())
    await asyncio.sleep(0.05)
    stalls.clear()
    started = time.perf_counter()
    status, body = await explained(web, last)
    took = time.perf_counter() - started
    beating.cancel()
    assert status == 200 and body["equal"] and body["rebuilt_from"] == "the start of the log", body
    stalls.sort()
    print(
        f"\nexplained offset {last} ({last + 1} records replayed) in {took:.2f} s; the loop's "
        f"stalls over {len(stalls)} turns: median {stalls[len(stalls) // 2] * 1000:.1f} ms, "
        f"longest {stalls[-1] * 1000:.1f} ms"
    )
    assert took > 0.2, "a replay long enough to measure"
    assert stalls[len(stalls) // 2] < 0.003 and stalls[-1] < 0.25  # a loaded machine's own stalls


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("", "offset must be an event's offset (digits 0-9), given once; got 0 values"),
        ("?offset=", "got ''"),
        ("?offset=abc", "got 'abc'"),
        ("?offset=-1", "got '-1'"),
        ("?offset=%C2%B2", "got '²'"),
        ("?offset=1&offset=2", "query parameter 'offset' given more than once"),
        ("?offset=1&seq=2", "unknown query parameter 'seq'"),
    ],
)
async def test_an_explanation_needs_one_offset_that_is_a_number(web: Web, query: str, why: str) -> None:
    status, body = await answer(await web.client.get(f"/models/0/explain{query}", headers=read(API_TOKEN)))
    assert status == 400 and why in body["error"], body


async def test_an_offset_that_is_no_scored_event_or_not_in_the_log_is_a_4xx(
    web: Web, recorded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored = {p["offset"] for p in recorded.predictions}
    label = next(o for o in range(200) if o not in scored and o != 20)
    oldest = min(h.offset for h in web.serving.kept_headers(0))
    end = len(recorded.log)
    cases = [
        (20, 422, "offset 20 of partition 0 is no scored event: DeadLetter"),  # the bad record
        (label, 422, f"offset {label} of partition 0 is no scored event: Labelled"),
        (end, 404, f"partition 0 has applied offsets up to {end - 1}, not {end} yet"),
        (999_999_999, 404, "not 999999999 yet"),
    ]
    for offset, status, why in cases:
        got, body = await explained(web, offset)
        assert got == status and why in body["error"], (offset, body)
    # Retention deleted the log's first records: an offset among them is no longer in the log.
    topics = recorded_topics(recorded, web.context.settings)
    topics.by_topic[TOPIC] = topics.by_topic[TOPIC][10:]
    monkeypatch.setattr(replay, "each_record", topics.each_record)
    status, body = await explained(web, 5)
    assert (status, body) == (
        404,
        {"error": "the log of partition 0 holds no offset 5 (retention deleted it, or it was never written)"},
    )
    # Beyond the view's bounds: too many events, or bytes, from a kept snapshot to the offset.
    bounds = explain.BOUNDS
    monkeypatch.setattr(explain, "BOUNDS", dataclasses.replace(bounds, events=100))
    status, body = await explained(web, oldest - 1)
    assert status == 422 and f"is {oldest} events after where its replay starts (offset 0" in body["error"]
    monkeypatch.setattr(explain, "BOUNDS", dataclasses.replace(bounds, log_bytes=1000))
    status, body = await explained(web, end - 1)
    assert status == 422 and "are over 1000 bytes, the most read here" in body["error"]


async def test_an_explanation_that_cannot_finish_is_a_503(
    web: Web, recorded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    offset = recorded.predictions[-1]["offset"]
    monkeypatch.setattr(explain, "TIMEOUT", 0.0)
    assert await explained(web, offset) == (
        503,
        {"error": "the explanation took longer than 0 s; retry later"},
    )
    monkeypatch.undo()

    async def unreachable(*args: Any, **kwargs: Any) -> AsyncGenerator[ConsumerRecord, None]:
        raise KafkaConnectionError("no broker")
        yield

    monkeypatch.setattr(replay, "each_record", unreachable)
    status, body = await explained(web, offset)
    assert (status, body) == (503, {"error": "partition 0's topics could not be read: KafkaConnectionError"})


async def test_an_explanation_needs_the_api_token(web: Web) -> None:
    for headers in ({}, read(), read("Bearer-less wrong token value")):
        response = await web.client.get("/models/0/explain?offset=5", headers=headers)
        status, body = await answer(response)
        assert status == 401 and "STREAMAPP_API_TOKEN" in body["error"]
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="streamapp"'
    async for off in served(settings(STREAMAPP_API_TOKEN="")):
        status, body = await explained(off, 5)
        assert status == 403 and body["error"].startswith("refused: set STREAMAPP_API_TOKEN")


async def test_an_explanation_of_another_worker_s_partition_is_its_owner_s(web: Web) -> None:
    assert await explained(web, 5, partition=4) == (404, {"error": "no partition '4': partitions are 0..3"})
    status, body = await explained(web, 5, partition=2)
    assert status == 503 and "no owner right now" in body["error"]
    web.cluster.owned = {2: OTHER}
    web.cluster.answers["/models/2/explain?offset=5"] = (200, b'{"offset": 5}', "application/json")
    assert await explained(web, "05", partition=2) == (200, {"offset": 5})
    assert web.cluster.asked == [(OTHER, "GET", "/models/2/explain?offset=5", None, explain.FORWARD_TIMEOUT)]
    web.cluster.answers["/models/2/explain?offset=5"] = (429, b'{"error": "busy"}', "application/json")
    response = await web.client.get("/models/2/explain?offset=5", headers=read(API_TOKEN))
    assert response.status == 429 and response.headers["Retry-After"] == explain.RETRY_AFTER


async def test_a_worker_explains_one_decision_at_a_time(
    web: Web, recorded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = serve_run(web, recorded, monkeypatch)
    topics.hold = threading.Event()
    offset = recorded.predictions[-1]["offset"]
    first = asyncio.ensure_future(explained(web, offset))
    await asyncio.sleep(0.2)  # the first one waits for Kafka in its thread
    response = await web.client.get(f"/models/0/explain?offset={offset}", headers=read(API_TOKEN))
    status, body = await answer(response)
    assert status == 429 and response.headers["Retry-After"] == explain.RETRY_AFTER
    assert body == {"error": "this worker is explaining another decision (one at a time); retry shortly"}
    assert (await explained(web, "x"))[0] == 400, "what needs no replay is answered meanwhile"
    topics.hold.set()
    status, body = await first
    assert status == 200 and body["equal"]
    assert (await explained(web, offset))[0] == 200


# -- probes and the dashboard ----------------------------------------------------------------


class Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "script":
            self.inside = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self.inside = self.inside and tag != "script"

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.scripts[-1] += data


async def test_the_dashboard_allows_its_own_script_only(web: Web) -> None:
    page = (Path(__file__).parents[2] / "streamapp" / "dashboard.html").read_text()
    response = await web.client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert await response.text() == page
    parser = Scripts()
    parser.feed(page)
    assert parser.scripts
    hashes = [base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in parser.scripts]
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == " ".join(f"'sha256-{h}'" for h in hashes)
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_ready_and_the_openapi_document(web: Web) -> None:
    status, body = await answer(await web.client.get("/ready"))
    assert (status, body) == (200, {"ready": True, "state": "ok", "partitions": [0, 1]})
    status, body = await answer(await web.client.get("/openapi.json"))
    assert status == 200
    assert body["openapi"] == "3.0.3"
    schema = body["paths"]["/models/{partition}"]["get"]["parameters"][0]["schema"]
    assert schema["maximum"] == PARTITIONS - 1
