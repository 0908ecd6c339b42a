"""Web views: every model of the cluster from any worker, scoring on request, probes, dashboard.

Any worker answers for the whole cluster: it asks the owner of each partition (from the group's
last assignment, which every member receives) for what it serves, and says which partitions are
unknown and why instead of failing the page. Views only read what the agent owns; nothing that
arrives over HTTP is ever unpickled.

Every request passes one middleware first (`guard`): routes outside the API table
(streamapp/openapi.py) are 404, the table's access level is checked (streamapp/access.py; a
worker's signature, streamapp/peers.py, stands in for a forwarded client's token), and every
error, aiohttp's own included, is answered as JSON `{"error": reason}`. An unexpected exception
is logged and answered 500: a bug, which the fuzz tests look for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any, cast

import aiohttp
import faust
import orjson
from aiohttp import web as aioweb
from aiohttp.typedefs import Middleware
from aiokafka.partitioner import murmur2
from faust.web import Request, Response, View
from faust.web.base import BlueprintManager
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streamapp import control as controls
from streamapp import openapi, records, seam
from streamapp.access import OPEN, Tokens
from streamapp.histogram import BUCKETS
from streamapp.openapi import MAX_PROBES
from streamapp.peers import NotContacted, Peers, PeerVerifier
from streamapp.processor import Processor
from streamapp.settings import Settings

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 30.0  # seconds a change request waits for its control event to be applied
#: longest a probe batch holds the event loop before it lets the processor (and others) run
SLICE_SECONDS = 0.005
#: probe batches scored at once per worker: more wait, so that scoring cannot starve learning
SCORING_CONCURRENCY = 2
_NUMBER = re.compile("[0-9]{1,9}")
#: the request key under which the middleware records a verified worker-to-worker request
PEER = "streamapp.peer"
_DISPOSITION = re.compile('attachment; filename="[A-Za-z0-9._-]{1,200}"')
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def partition_of(key: str, partitions: int) -> int:
    """The partition a producer's default partitioner (Java's and aiokafka's) gives `key`."""
    return (murmur2(key.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF) % partitions


def parse_number(raw: str) -> int | None:
    """ASCII digits only, at most 9: str.isdigit() accepts '²', which int() refuses."""
    return int(raw) if _NUMBER.fullmatch(raw) else None


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> aioweb.Response:
    return aioweb.Response(
        body=orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> aioweb.Response:
    return json_response({"error": reason}, status, headers)


class ModelError(Exception):
    """The model cannot score a feature set (e.g. a string where it computes with numbers)."""


async def score_in_slices(
    predict: Callable[[dict[str, records.Feature]], Any],
    features: Sequence[dict[str, records.Feature]],
    budget: float = SLICE_SECONDS,
) -> list[Any]:
    """Score on the event loop, yielding to it every `budget` seconds.

    Not in an executor: the processor mutates the models on the loop, and River's models are not
    safe to read while they learn. Between slices the processor may apply events, so a batch's
    later predictions can come from a model that learned a few more events.
    """
    out = []
    started = time.perf_counter()
    for index, x in enumerate(features):
        try:
            out.append(predict(x))
        except Exception as exc:  # any model's own error on these features: the caller's 422
            raise ModelError(
                f"feature set {index}: the model cannot score it: {type(exc).__name__}: {exc}"
            ) from exc
        if time.perf_counter() - started > budget:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return out


def content_security_policy(page: str) -> str:
    """The dashboard may run its own script and nothing else: no inline event handler, no other
    script, no request but to its worker. A second line of defence: the page already sets every
    string it did not write as text, never as markup."""
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


# -- aiohttp's own error answers as JSON -------------------------------------------------------


def _from_http_exception(request: aioweb.BaseRequest, exc: aioweb.HTTPException) -> aioweb.Response:
    if exc.status == 404:
        reason = f"no such path: {request.path!r} (the API is described at /openapi.json)"
    elif exc.status == 405:
        allowed = ", ".join(sorted(cast(aioweb.HTTPMethodNotAllowed, exc).allowed_methods))
        reason = f"method {request.method} not allowed on {request.path!r} (allowed: {allowed})"
    elif exc.status == 413:
        reason = f"request body too large: {exc.text}"
    else:
        reason = exc.text or exc.reason
    kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    return error_response(exc.status, reason, kept)


def protocol_error(status: int, message: str) -> aioweb.StreamResponse:
    """What aiohttp refuses before any middleware runs (a malformed request line or header:
    400, and so on), answered as JSON like every other error."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    reason = f"{phrase}: {message}" if message and status != 500 else phrase
    return json_response({"error": reason}, status)


# -- the guard: routes, access, errors ---------------------------------------------------------

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


def guard(tokens: Tokens, verifier: PeerVerifier) -> Middleware:
    """The middleware every request passes: the API table's routes only, its access level,
    JSON errors, and a logged JSON 500 for anything unexpected."""

    async def checked(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        match = request.match_info
        if match.http_exception is not None:
            raise match.http_exception  # aiohttp's own 404 / 405
        resource = match.route.resource
        path = resource.canonical if resource is not None else ""
        op = openapi.operation(request.method, path)
        if op is None:
            if path in openapi.PATHS:
                raise aioweb.HTTPMethodNotAllowed(request.method, openapi.allowed_methods(path))
            raise aioweb.HTTPNotFound()  # a route that is not ours (Faust's built-in views)
        peer = False
        if op.access != OPEN and verifier.claims_peer(request.headers):
            body = await request.read()
            why = verifier.verify(request.method, request.raw_path, body, request.headers)
            if why is not None:
                return error_response(401, why)
            peer = True
        request[PEER] = peer
        refused = tokens.check(op.access, request.headers, peer)
        if refused is not None:
            challenge = {"WWW-Authenticate": 'Bearer realm="streamapp"'} if refused.status == 401 else None
            return error_response(refused.status, refused.reason, challenge)
        bad_query = openapi.unknown_query(op, list(request.query.keys()))
        if bad_query is not None:
            return error_response(400, bad_query)
        return await handler(request)

    @aioweb.middleware
    async def middleware(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        try:
            response = await checked(request, handler)
        except aioweb.HTTPException as exc:
            if exc.status < 400:
                raise
            return _from_http_exception(request, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("streamapp: %s %r failed", request.method, request.path)
            return error_response(500, "internal error (logged by the worker)")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return middleware


@dataclass(frozen=True, slots=True)
class _Forwarded:
    status: int
    body: bytes
    content_type: str


def register(
    app: faust.App,
    processor: Processor,
    settings: Settings,
    changelog_topic: str,
    lag: Callable[[int], int | None],
    source_topic: Callable[[int], str | None],
) -> None:
    """Add the views to `app`. `lag(partition)` gives the events not yet applied (or None);
    `source_topic(partition)` the topic the partition's events are read from (or None)."""
    peers = Peers(app, changelog_topic, processor.signer, settings.peer_url_pattern)
    verifier = PeerVerifier(processor.signer)
    tokens = Tokens(settings.read_token, settings.api_token)
    limits = records.Limits.from_settings(settings)
    dashboard = resources.files("streamapp").joinpath("dashboard.html").read_text()
    dashboard_policy = content_security_policy(dashboard)
    api_document = orjson.dumps(openapi.document(settings))
    scoring = asyncio.Semaphore(SCORING_CONCURRENCY)
    rollback_written: dict[int, float] = {}  # wall time this worker last wrote a partition's rollback

    # Faust's built-in views (/router: the cluster's URLs; its "/" index) are not ours: none is
    # mounted, and the guard answers 404 for any route outside the API table anyway.
    app.web.blueprints = BlueprintManager()
    cast(AiohttpWeb, app.web).web_app.middlewares.append(guard(tokens, verifier))
    seam.answer_protocol_errors(app, protocol_error)

    def ready() -> tuple[bool, str]:
        if app.rebalancing:
            return False, "rebalancing"
        # TableManagerT's stubs omit the recovery service the manager has.
        if not cast(Any, app.tables).recovery.completed.is_set():
            return False, "recovering the tables"
        return True, "ok"

    def partition_summary(partition: int, now: float) -> dict[str, Any]:
        summary = processor.states[partition].summary(now)
        summary["lag"] = lag(partition)
        timing = processor.timings.get(partition)
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
        partitions = [partition_summary(partition, now) for partition in sorted(processor.states)]
        is_ready, why = ready()
        return {"worker": peers.me, "ready": is_ready, "state": why, "partitions": partitions}

    def json(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cast(Response, json_response(value, status, headers))

    def error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
        return cast(Response, error_response(status, reason, headers))

    def parse_partition(raw: str) -> int | Response:
        p = parse_number(raw)
        if p is None or p >= settings.partitions:
            return error(404, f"no partition {raw!r}: partitions are 0..{settings.partitions - 1}")
        return p

    async def ask(
        owner: str, method: str, path_qs: str, body: bytes | None, timeout: float | None
    ) -> _Forwarded | str:
        """The owner's answer, or why there is none (never contacted, no answer, a 5xx)."""
        try:
            status, content, content_type = await peers.ask(owner, method, path_qs, body, timeout)
        except NotContacted as exc:
            return str(exc)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return f"its owner {owner!r} does not answer ({exc!r})"
        if status >= 500 or content_type not in ("application/json", "application/octet-stream"):
            return f"its owner {owner!r} answered {status} ({content_type})"
        return _Forwarded(status, content, content_type)

    async def at_owner(
        request: Request,
        partition: int,
        method: str,
        path_qs: str,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Response | _Forwarded | None:
        """None when this worker serves `partition`; else the owner's answer, or why there is none."""
        if partition in processor.states:
            return None
        if cast(Any, request).get(PEER):
            return error(503, f"partition {partition} is not served by {peers.me!r} (any more)")
        owner = peers.owners().get(partition)
        if owner is None or owner == peers.me:
            return error(503, f"partition {partition} has no owner right now (rebalancing); retry shortly")
        answer = await ask(owner, method, path_qs, body, timeout)
        if isinstance(answer, str):
            return error(503, f"partition {partition}: {answer}")
        return answer

    def relay(answer: Response | _Forwarded) -> Response:
        if isinstance(answer, _Forwarded):
            return cast(
                Response,
                aioweb.Response(body=answer.body, status=answer.status, content_type=answer.content_type),
            )
        return answer

    async def served_here(request: Request, partition: str, path: str) -> int | Response:
        """The partition's number when this worker serves it, else the owner's answer to the
        same GET (or why there is none), or a 404 for a partition that does not exist."""
        p = parse_partition(partition)
        if not isinstance(p, int):
            return p
        forwarded = await at_owner(request, p, "GET", path.format(p=p))
        return p if forwarded is None else relay(forwarded)

    def local_answer(content: bytes) -> dict[str, Any] | None:
        """A peer's /models/local, keeping only well-formed partitions; None if malformed."""
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("partitions"), list):
            return None
        doc["partitions"] = [
            s
            for s in doc["partitions"]
            if isinstance(s, dict)
            and type(s.get("partition")) is int
            and 0 <= s["partition"] < settings.partitions
        ]
        return doc

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
            answers = await asyncio.gather(*(ask(url, "GET", "/models/local", None, None) for url in urls))
            workers: dict[str, dict[str, Any]] = {peers.me: local()}
            problems: dict[str, str] = {}
            for url, answer in zip(urls, answers, strict=True):
                if isinstance(answer, str):
                    problems[url] = answer
                elif answer.status != 200:
                    problems[url] = f"answered {answer.status}"
                else:
                    doc = local_answer(answer.body)
                    if doc is None:
                        problems[url] = "answered something that is not its partitions"
                    else:
                        workers[url] = doc
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
                    reason = f"its owner: {problems[owner]}"
                else:
                    reason = f"its owner {owner!r} is recovering it"
                partitions.append(
                    {"partition": partition, "owner": owner, "status": "unavailable", "reason": reason}
                )
            return json(
                {
                    "worker": peers.me,
                    "time": time.time(),
                    "buckets": BUCKETS,
                    "workers": {
                        **{url: {"ok": True, "ready": w.get("ready") is True} for url, w in workers.items()},
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
            state = processor.states[p]
            detail = partition_summary(p, time.time())
            detail.update(
                worker=peers.me,
                parameters=seam.model_parameters(state.model),
                memory_bytes=seam.model_memory_bytes(state.model),
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
                    "bytes": h.payload_bytes,
                    "models": h.models,
                }
                for h in processor.kept_headers(p)
            ]
            return json({"partition": p, "snapshots": kept})

    @app.page("/models/{partition}/snapshot")
    class Snapshot(View):
        """A kept snapshot as written, the newest or ?seq=N (API token: it is the model)."""

        async def get(self, request: Request, partition: str) -> Response:
            raw = request.query.get("seq")
            seq = None if raw is None else parse_number(raw)
            if raw is not None and seq is None:
                return error(400, f"seq must be a snapshot number (digits 0-9), got {raw!r}")
            query = "" if seq is None else f"?seq={seq}"
            p = parse_partition(partition)
            if not isinstance(p, int):
                return p
            name = f"{settings.app_id}-p{p}-snapshot{{}}.bin"
            forwarded = await at_owner(request, p, "GET", f"/models/{p}/snapshot{query}")
            if isinstance(forwarded, _Forwarded) and forwarded.status == 200:
                return self.bytes(
                    forwarded.body,
                    content_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name.format(seq or "")}"'},
                )
            if forwarded is not None:
                return relay(forwarded)
            kept = processor.kept_snapshots(p)
            chosen = [(h, blob) for h, blob in kept if seq is None or h.seq == seq]
            if not chosen:
                return error(
                    404, f"partition {p} keeps no snapshot {seq or ''} (kept: {[h.seq for h, _ in kept]})"
                )
            header, blob = chosen[0]
            disposition = f'attachment; filename="{name.format(header.seq)}"'
            if not _DISPOSITION.fullmatch(disposition):  # an app id with quotes or spaces
                disposition = f'attachment; filename="p{p}-snapshot{header.seq}.bin"'
            return self.bytes(
                blob, content_type="application/octet-stream", headers={"Content-Disposition": disposition}
            )

    def parse_change(action: str, body: bytes) -> records.Control | Response:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return error(400, 'the body must be a JSON object: {"model": "..."} or {"seq": N}')
        if action == "promote":
            model = doc.get("model")
            if not isinstance(model, str) or not 0 < len(model) <= settings.max_name_length:
                return error(
                    400, f"'model' must be a model's name (1 to {settings.max_name_length} characters)"
                )
            fields: dict[str, Any] = {"model": model}
        else:
            seq = doc.get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 999_999_999:
                return error(400, "'seq' must be the number of a kept snapshot (1 or more)")
            fields = {"seq": seq}
        value = records.encode({"id": f"control-{uuid.uuid4()}", "control": action, **fields})
        try:
            event = records.decode(value, limits)
        except records.BadEvent as exc:
            return error(400, str(exc))
        assert isinstance(event, records.Control)
        return event

    async def apply_change(p: int, action: str, body: bytes) -> Response:
        """Write a promotion or rollback into partition `p`'s log (this worker serves it), signed
        so the worker applies it, and answer once it is applied.

        Through the log, not straight into memory: replay after a crash or a move repeats the
        change at the same place, so every prediction stays reproducible.
        """
        event = parse_change(action, body)
        if not isinstance(event, records.Control):
            return event
        state = processor.states.get(p)
        if state is None:
            return error(503, f"partition {p} is being moved; retry shortly")
        names = state.names()
        if action == "promote" and event.model not in names:
            return error(404, f"partition {p} has no model {event.model!r} (models: {names})")
        if action == "rollback":
            kept = [h.seq for h in processor.kept_headers(p)]
            if event.seq not in kept:
                return error(404, f"partition {p} keeps no snapshot #{event.seq} (kept: {kept})")
            interval = settings.rollback_min_interval
            last = max(float(getattr(state, "last_rollback_at", 0.0) or 0.0), rollback_written.get(p, 0.0))
            wait = last + interval - time.time() if interval and last else 0.0
            if wait > 0:
                return error(
                    429,
                    f"partition {p} was rolled back less than {interval:g} s ago "
                    f"(STREAMAPP_ROLLBACK_MIN_INTERVAL); retry in {math.ceil(wait)} s",
                    {"Retry-After": str(math.ceil(wait))},
                )
        topic = source_topic(p)
        if topic is None:
            return error(503, f"partition {p} is being moved; retry shortly")
        value = records.encode(
            {
                "id": event.id,
                "control": action,
                **({"model": event.model} if action == "promote" else {"seq": event.seq}),
            }
        )
        headers = controls.sign(processor.signer, p, event, int(time.time()) + controls.LIFETIME)
        if action == "rollback":
            rollback_written[p] = time.time()
        written = await app.producer.send_and_wait(topic, None, value, p, None, headers)
        offset = written.offset
        deadline = time.monotonic() + APPLY_TIMEOUT
        current = processor.states.get(p)
        while current is not None and current.offset < offset and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            current = processor.states.get(p)
        done = [c for c in (current.changes if current is not None else ()) if c["offset"] == offset]
        if current is None or not done:
            return json({"partition": p, "offset": offset, "outcome": "written, not applied yet"}, 202)
        outcome = done[0]["outcome"]
        answer = {"partition": p, "offset": offset, "outcome": outcome, "model": current.version()}
        return json(answer, 409 if outcome.startswith("refused") else 200)

    async def change(request: Request, partition: str, action: str) -> Response:
        p = parse_partition(partition)
        if not isinstance(p, int):
            return p
        body = await cast(aioweb.Request, request).read()
        # The owner answers once the change is applied: wait as long as it may.
        forwarded = await at_owner(request, p, "POST", f"/models/{p}/{action}", body, APPLY_TIMEOUT + 5)
        if forwarded is not None:
            return relay(forwarded)
        return await apply_change(p, action, body)

    @app.page("/models/{partition}/promote")
    class Promote(View):
        """Make another of the partition's models the champion: {"model": name} (API token)."""

        async def post(self, request: Request, partition: str) -> Response:
            return await change(request, partition, "promote")

    @app.page("/models/{partition}/rollback")
    class Rollback(View):
        """Return the partition's models to a kept snapshot: {"seq": N} (API token)."""

        async def post(self, request: Request, partition: str) -> Response:
            return await change(request, partition, "rollback")

    @app.page("/promote")
    class PromoteEverywhere(View):
        """Promote a model on every partition: {"model": name} (API token). Each partition's owner
        writes its own control event; the answer has each partition's outcome."""

        async def post(self, request: Request) -> Response:
            body = await cast(aioweb.Request, request).read()
            parsed = parse_change("promote", body)
            if not isinstance(parsed, records.Control):
                return parsed
            owners = peers.owners()
            missing = sorted(set(range(settings.partitions)) - set(owners))
            if missing:
                return error(
                    503, f"partitions {missing} have no owner right now (rebalancing); retry shortly"
                )

            async def one(partition: int) -> dict[str, Any]:
                if partition in processor.states:
                    answer: Response | _Forwarded | str = await apply_change(partition, "promote", body)
                else:
                    answer = await ask(
                        owners[partition], "POST", f"/models/{partition}/promote", body, APPLY_TIMEOUT + 5
                    )
                if isinstance(answer, str):
                    return {"partition": partition, "status": 503, "error": answer}
                try:
                    doc = orjson.loads(answer.body)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    return {
                        "partition": partition,
                        "status": 503,
                        "error": "its owner answered something else than JSON",
                    }
                return {**doc, "partition": partition, "status": answer.status}

            answers = await asyncio.gather(*(one(p) for p in range(settings.partitions)))
            statuses = {a["status"] for a in answers}
            if len(statuses) > 1:
                return json({"partitions": answers}, 207)
            status = statuses.pop()
            if status < 400:
                return json({"partitions": answers}, status)
            first = answers[0]
            why = first.get("error") or first.get("outcome") or f"answered {status}"
            return json(
                {"error": f"every partition answered {status}; partition 0: {why}", "partitions": answers},
                status,
            )

    async def score(request: Request, p: int, body: bytes) -> Response:
        """Body {"x": [{feature: value, ...}, ...]} -> {"predictions": [...], "model": ...}."""
        forwarded = await at_owner(request, p, "POST", f"/models/{p}/predict", body)
        if forwarded is not None:
            return relay(forwarded)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error(400, 'the body must be JSON: {"x": [{...}, ...]}')
        probes = doc.get("x") if isinstance(doc, dict) else None
        if not isinstance(probes, list) or len(probes) > MAX_PROBES:
            return error(400, f"'x' must be a list of at most {MAX_PROBES} feature objects")
        try:
            features = [records.features(x, limits) for x in probes]
        except records.BadEvent as exc:
            return error(400, str(exc))
        state = processor.states.get(p)
        if state is None:
            return error(503, f"partition {p} is being moved; retry shortly")
        check = getattr(state, "check_features", None)

        def predict(x: dict[str, records.Feature]) -> Any:
            if check is not None:
                check(x)  # a feature of another kind than the partition learned
            return state.predict(x)

        async with scoring:
            version = state.version()
            try:
                predictions = await score_in_slices(predict, features)
            except ModelError as exc:
                return error(422, str(exc))
        return json({"predictions": predictions, "model": version})

    @app.page("/models/{partition}/predict")
    class PartitionPredict(View):
        """Score feature sets with one partition's model, without learning."""

        async def post(self, request: Request, partition: str) -> Response:
            p = parse_partition(partition)
            if not isinstance(p, int):
                return p
            return await score(request, p, await cast(aioweb.Request, request).read())

    @app.page("/predict")
    class Predict(View):
        """Score one event by key, with the model of the key's partition, wherever it lives.

        Body: {"key": "...", "x": {feature: value, ...}}; it never learns.
        """

        async def post(self, request: Request) -> Response:
            try:
                doc = orjson.loads(await cast(aioweb.Request, request).read())
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
            try:
                scored = orjson.loads(answer.body)
                prediction, model = scored["predictions"][0], scored["model"]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                return error(503, f"partition {p}: its owner answered something that is not predictions")
            return json(
                {
                    "key": doc["key"],
                    "partition": p,
                    "owner": peers.me if p in processor.states else peers.owners().get(p),
                    "prediction": prediction,
                    "model": model,
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
            body = {"ready": is_ready, "state": why, "partitions": sorted(processor.states)}
            return json(body, 200 if is_ready else 503)

    @app.page("/openapi.json")
    class OpenAPI(View):
        """The HTTP API as an OpenAPI 3 document (streamapp/openapi.py), for clients and fuzzers."""

        async def get(self, request: Request) -> Response:
            return self.bytes(api_document, content_type="application/json")

    @app.page("/")
    class Dashboard(View):
        """The live dashboard (one self-contained page: no CDN, works offline). The page is open;
        the data it polls (/models) needs the read token when one is set, which it asks for."""

        async def get(self, request: Request) -> Response:
            return self.html(dashboard, headers={"Content-Security-Policy": dashboard_policy})
