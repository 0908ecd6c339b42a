"""Web views: every model of the cluster from any worker, scoring on request, probes, dashboard.

Any worker answers for the whole cluster: it asks the owner of each partition (from the group's
last assignment, which every member receives) for what it serves, and says which partitions are
unknown and why instead of failing the page. Views only read what the agent owns; nothing that
arrives over HTTP is ever unpickled. Changing or sensitive requests need the bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

import aiohttp
import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.web import Request, Response, View

from streamapp import records
from streamapp.agent import Learner
from streamapp.histogram import BUCKETS
from streamapp.settings import Settings

MAX_PROBES = 10_000
PEER_TIMEOUT = aiohttp.ClientTimeout(total=5)
APPLY_TIMEOUT = 30.0  # seconds a change request waits for its control event to be applied
FORWARDED = "X-Streamapp-Forwarded"  # a forwarded request is answered locally, never forwarded again


def partition_of(key: str, partitions: int) -> int:
    """The partition a producer's default partitioner (Java's and aiokafka's) gives `key`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Peers:
    """Who serves which partition (as of the last rebalance), and how to ask them."""

    def __init__(self, app: faust.App, changelog_topic: str) -> None:
        self.app = app
        self.changelog_topic = changelog_topic

    @property
    def me(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def owners(self) -> dict[int, str]:
        """{partition: worker URL} of the active partitions the group leader last assigned."""
        owners = {}
        for url, topics in self.app.assignor.table_metadata(self.changelog_topic).items():
            for partition in topics.get(self.changelog_topic, ()):
                owners[partition] = str(url).rstrip("/")
        return owners

    async def ask(
        self,
        url: str,
        method: str,
        path: str,
        body: bytes | None = None,
        auth: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of another worker's answer; raises on no answer."""
        session: aiohttp.ClientSession = self.app.http_client
        headers = {FORWARDED: "1"}
        if auth is not None:
            headers["Authorization"] = auth
        if body is not None:
            headers["Content-Type"] = "application/json"
        limit = PEER_TIMEOUT if timeout is None else aiohttp.ClientTimeout(total=timeout)
        request = session.request(method, url + path, data=body, headers=headers, timeout=limit)
        async with request as answer:
            return answer.status, await answer.read(), answer.content_type


def register(
    app: faust.App,
    learner: Learner,
    settings: Settings,
    changelog_topic: str,
    lag: Callable[[int], int | None],
    source_topic: Callable[[int], str | None],
) -> None:
    """Add the views to `app`. `lag(partition)` gives the events not yet applied (or None);
    `source_topic(partition)` the topic the partition's events are read from (or None)."""
    peers = Peers(app, changelog_topic)
    dashboard = resources.files("streamapp").joinpath("dashboard.html").read_text()

    def ready() -> tuple[bool, str]:
        if app.rebalancing:
            return False, "rebalancing"
        # TableManagerT's stubs omit the recovery service the manager has.
        if not cast(Any, app.tables).recovery.completed.is_set():
            return False, "recovering the tables"
        return True, "ok"

    def partition_summary(partition: int, now: float) -> dict[str, Any]:
        summary = learner.states[partition].summary(now)
        summary["lag"] = lag(partition)
        timing = learner.timings.get(partition)
        if timing is not None:
            summary["predictions"] = timing.predictions
            summary["alerts"] = timing.alerts
            summary["latency"] = {
                "predict": timing.predict.counts,
                "learn": timing.learn.counts,
                "end_to_end": timing.end_to_end.counts,
            }
        return summary

    def local() -> dict[str, Any]:
        now = time.time()
        partitions = [partition_summary(partition, now) for partition in sorted(learner.states)]
        is_ready, why = ready()
        return {"worker": peers.me, "ready": is_ready, "state": why, "partitions": partitions}

    def json(value: Any, status: int = 200) -> Response:
        return app.web.bytes(
            orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS),
            content_type="application/json",
            status=status,
        )

    def error(status: int, reason: str) -> Response:
        return json({"error": reason}, status)

    def parse_partition(raw: str) -> int | Response:
        if not raw.isdigit() or int(raw) >= settings.partitions:
            return error(404, f"no partition {raw!r}: partitions are 0..{settings.partitions - 1}")
        return int(raw)

    def unauthorized(request: Request) -> Response | None:
        if not settings.api_token:
            return error(403, "refused: set STREAMAPP_API_TOKEN on the workers to enable this endpoint")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_token.reveal()}".encode()):
            return error(401, "a valid 'Authorization: Bearer <STREAMAPP_API_TOKEN>' header is required")
        return None

    async def at_owner(
        request: Request,
        partition: int,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Response | None:
        """None when this worker serves `partition`; else the owner's answer, or why there is none."""
        if partition in learner.states:
            return None
        if request.headers.get(FORWARDED):
            return error(503, f"partition {partition} is not served by {peers.me} (any more)")
        owner = peers.owners().get(partition)
        if owner is None or owner == peers.me:
            return error(503, f"partition {partition} has no owner right now (rebalancing); retry shortly")
        try:
            auth = request.headers.get("Authorization")
            status, content, content_type = await peers.ask(owner, method, path, body, auth, timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(503, f"partition {partition}: its owner {owner} does not answer ({exc!r})")
        return app.web.bytes(content, content_type=content_type, status=status)

    async def served_here(request: Request, partition: str, path: str) -> int | Response:
        """The partition's number when this worker serves it, else the owner's answer to the
        same GET (or why there is none), or a 404 for a partition that does not exist."""
        p = parse_partition(partition)
        if not isinstance(p, int):
            return p
        forwarded = await at_owner(request, p, "GET", path.format(p=p))
        return p if forwarded is None else forwarded

    @app.page("/models/local")
    class LocalModels(View):
        """The partitions this worker serves (what /models gathers from every worker)."""

        async def get(self, request: Request) -> Response:
            return json({**local(), "buckets": BUCKETS})

    @app.page("/models")
    class Models(View):
        """Every partition of the cluster, with its owner; unknown ones say why."""

        async def get(self, request: Request) -> Response:
            owners = peers.owners()
            urls = sorted(set(owners.values()) - {peers.me})
            answers = await asyncio.gather(
                *(peers.ask(url, "GET", "/models/local") for url in urls), return_exceptions=True
            )
            workers: dict[str, dict[str, Any]] = {peers.me: local()}
            problems: dict[str, str] = {}
            for url, answer in zip(urls, answers, strict=True):
                if isinstance(answer, BaseException):
                    problems[url] = f"does not answer: {answer!r}"
                elif answer[0] != 200:
                    problems[url] = f"answered {answer[0]}"
                else:
                    workers[url] = orjson.loads(answer[1])
            served = {s["partition"]: (url, s) for url, w in workers.items() for s in w["partitions"]}
            partitions = []
            for partition in range(settings.partitions):
                owner = owners.get(partition)
                if partition in served and (owner is None or served[partition][0] == owner):
                    url, summary = served[partition]
                    partitions.append({**summary, "owner": url, "status": "served"})
                    continue
                if owner is None:
                    reason = "no worker owns it (the group is rebalancing)"
                elif owner in problems:
                    reason = f"its owner {owner} {problems[owner]}"
                else:
                    reason = f"its owner {owner} is recovering it"
                partitions.append(
                    {"partition": partition, "owner": owner, "status": "unavailable", "reason": reason}
                )
            return json(
                {
                    "worker": peers.me,
                    "time": time.time(),
                    "buckets": BUCKETS,
                    "workers": {
                        **{url: {"ok": True, "ready": w.get("ready")} for url, w in workers.items()},
                        **{url: {"ok": False, "error": problem} for url, problem in problems.items()},
                    },
                    "partitions": partitions,
                }
            )

    @app.page("/models/{partition}")
    class Model(View):
        """One partition in detail: its summary, the model's parameters and size."""

        async def get(self, request: Request, partition: str) -> Response:
            p = await served_here(request, partition, "/models/{p}")
            if not isinstance(p, int):
                return p
            state = learner.states[p]
            detail = partition_summary(p, time.time())
            detail.update(
                worker=peers.me,
                parameters=state.model._get_params(),
                memory_bytes=state.model._raw_memory_usage,
                snapshot_download=f"/models/{p}/snapshot",
            )
            return json(detail)

    @app.page("/models/{partition}/snapshots")
    class Snapshots(View):
        """The partition's kept snapshots (headers only): what a rollback can return to."""

        async def get(self, request: Request, partition: str) -> Response:
            p = await served_here(request, partition, "/models/{p}/snapshots")
            if not isinstance(p, int):
                return p
            kept = [
                {
                    "seq": h.seq,
                    "offset": h.offset,
                    "created": h.created,
                    "bytes": len(blob),
                    "models": h.models,
                }
                for h, blob in learner.kept_snapshots(p)
            ]
            return json({"partition": p, "snapshots": kept})

    @app.page("/models/{partition}/snapshot")
    class Snapshot(View):
        """A kept snapshot as written, the newest or ?seq=N (needs the token: it is the model)."""

        async def get(self, request: Request, partition: str) -> Response:
            refused = unauthorized(request)
            if refused is not None:
                return refused
            seq = request.query.get("seq", "")
            if seq and not seq.isdigit():
                return error(400, f"seq must be a snapshot number, got {seq!r}")
            p = await served_here(request, partition, "/models/{p}/snapshot" + (f"?seq={seq}" if seq else ""))
            if not isinstance(p, int):
                return p
            kept = learner.kept_snapshots(p)
            chosen = [(h, blob) for h, blob in kept if not seq or h.seq == int(seq)]
            if not chosen:
                return error(
                    404, f"partition {p} keeps no snapshot {seq or ''} (kept: {[h.seq for h, _ in kept]})"
                )
            header, blob = chosen[0]
            name = f"{settings.app_id}-p{p}-snapshot{header.seq}.bin"
            return self.bytes(
                blob,
                content_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )

    async def change(request: Request, partition: str, action: str) -> Response:
        """Write a promotion or rollback into the partition's log and answer once it is applied.

        Through the log, not straight into memory: replay after a crash or a move repeats the
        change at the same place, so every prediction stays reproducible.
        """
        refused = unauthorized(request)
        if refused is not None:
            return refused
        p = parse_partition(partition)
        if not isinstance(p, int):
            return p
        body = await request.read()
        # The owner answers once the change is applied: wait as long as it may.
        forwarded = await at_owner(request, p, "POST", f"/models/{p}/{action}", body, APPLY_TIMEOUT + 5)
        if forwarded is not None:
            return forwarded
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return error(400, 'the body must be a JSON object: {"model": "..."} or {"seq": N}')
        fields = {"model": doc.get("model")} if action == "promote" else {"seq": doc.get("seq")}
        value = records.encode({"id": f"control-{uuid.uuid4()}", "control": action, **fields})
        try:
            control = records.decode(value, records.Limits.from_settings(settings))
        except records.BadEvent as exc:
            return error(400, str(exc))
        assert isinstance(control, records.Control)
        names = learner.states[p].names()
        if action == "promote" and control.model not in names:
            return error(404, f"partition {p} has no model {control.model!r} (models: {names})")
        if action == "rollback":
            kept = [h.seq for h, _ in learner.kept_snapshots(p)]
            if control.seq not in kept:
                return error(404, f"partition {p} keeps no snapshot #{control.seq} (kept: {kept})")
        topic = source_topic(p)
        if topic is None:
            return error(503, f"partition {p} is being moved; retry shortly")
        written = await app.producer.send_and_wait(topic, None, value, p, None, None)
        offset = written.offset
        deadline = time.monotonic() + APPLY_TIMEOUT
        state = learner.states.get(p)
        while state is not None and state.offset < offset and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            state = learner.states.get(p)
        done = [c for c in (state.changes if state is not None else ()) if c["offset"] == offset]
        if state is None or not done:
            answer = {"partition": p, "offset": offset, "outcome": "written, not applied yet"}
            return json(answer, 202)
        answer = {"partition": p, "offset": offset, "outcome": done[0]["outcome"], "model": state.version()}
        return json(answer, 409 if done[0]["outcome"].startswith("refused") else 200)

    @app.page("/models/{partition}/promote")
    class Promote(View):
        """Make another of the partition's models the champion: {"model": name} (token)."""

        async def post(self, request: Request, partition: str) -> Response:
            return await change(request, partition, "promote")

    @app.page("/models/{partition}/rollback")
    class Rollback(View):
        """Return the partition's models to a kept snapshot: {"seq": N} (token)."""

        async def post(self, request: Request, partition: str) -> Response:
            return await change(request, partition, "rollback")

    @app.page("/promote")
    class PromoteEverywhere(View):
        """Promote a model on every partition: {"model": name} (token). Each partition's owner
        writes its own control event; the answer has each partition's outcome."""

        async def post(self, request: Request) -> Response:
            refused = unauthorized(request)
            if refused is not None:
                return refused
            body = await request.read()
            owners = peers.owners()
            missing = sorted(set(range(settings.partitions)) - set(owners))
            if missing:
                return error(
                    503, f"partitions {missing} have no owner right now (rebalancing); retry shortly"
                )
            auth = request.headers.get("Authorization")

            async def one(partition: int) -> dict[str, Any]:
                try:
                    status, content, _ = await peers.ask(
                        owners[partition],
                        "POST",
                        f"/models/{partition}/promote",
                        body,
                        auth,
                        APPLY_TIMEOUT + 5,
                    )
                except (TimeoutError, aiohttp.ClientError) as exc:
                    return {
                        "partition": partition,
                        "status": 503,
                        "error": f"owner does not answer ({exc!r})",
                    }
                return {"partition": partition, "status": status, **orjson.loads(content)}

            answers = await asyncio.gather(*(one(p) for p in range(settings.partitions)))
            worst = max(a["status"] for a in answers)
            return json({"partitions": answers}, 200 if worst == 200 else 207)

    async def score(request: Request, p: int, body: bytes) -> Response:
        """Body {"x": [{feature: value, ...}, ...]} -> {"predictions": [...], "model": ...}."""
        forwarded = await at_owner(request, p, "POST", f"/models/{p}/predict", body)
        if forwarded is not None:
            return forwarded
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error(400, 'the body must be JSON: {"x": [{...}, ...]}')
        probes = doc.get("x") if isinstance(doc, dict) else None
        if not isinstance(probes, list) or len(probes) > MAX_PROBES:
            return error(400, f"'x' must be a list of at most {MAX_PROBES} feature objects")
        try:
            features = [records.features(x, records.Limits.from_settings(settings)) for x in probes]
        except records.BadEvent as exc:
            return error(400, str(exc))
        state = learner.states[p]
        return json({"predictions": [state.predict(x) for x in features], "model": state.version()})

    @app.page("/models/{partition}/predict")
    class PartitionPredict(View):
        """Score feature sets with one partition's model, without learning."""

        async def post(self, request: Request, partition: str) -> Response:
            p = parse_partition(partition)
            if not isinstance(p, int):
                return p
            return await score(request, p, await request.read())

    @app.page("/predict")
    class Predict(View):
        """Score one event by key, with the model of the key's partition, wherever it lives.

        Body: {"key": "...", "x": {feature: value, ...}}; it never learns.
        """

        async def post(self, request: Request) -> Response:
            try:
                doc = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return error(400, 'the body must be JSON: {"key": "...", "x": {...}}')
            if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
                return error(400, "'key' must be a string (the key the producers use)")
            if not isinstance(doc.get("x"), dict):
                return error(400, "'x' must be an object of features")
            p = partition_of(doc["key"], settings.partitions)
            answer = await score(request, p, orjson.dumps({"x": [doc["x"]]}))
            if answer.status != 200:
                return answer
            scored = orjson.loads(answer.body)
            return json(
                {
                    "key": doc["key"],
                    "partition": p,
                    "owner": peers.me if p in learner.states else peers.owners().get(p),
                    "prediction": scored["predictions"][0],
                    "model": scored["model"],
                }
            )

    @app.page("/health")
    class Health(View):
        """The process answers (liveness)."""

        async def get(self, request: Request) -> Response:
            return json({"status": "ok"})

    @app.page("/ready")
    class Ready(View):
        """Joined the group and recovered its partitions (readiness): 503 until then."""

        async def get(self, request: Request) -> Response:
            is_ready, why = ready()
            body = {"ready": is_ready, "state": why, "partitions": sorted(learner.states)}
            return json(body, 200 if is_ready else 503)

    @app.page("/")
    class Dashboard(View):
        """The live dashboard (one self-contained page: no CDN, works offline)."""

        async def get(self, request: Request) -> Response:
            return self.html(dashboard)
