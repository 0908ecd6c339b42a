"""Promotions and rollbacks: of one partition (/models/{partition}/promote, .../rollback) and of
every partition at once (/promote).

A change goes through the partition's log, not straight into memory: the owner writes a signed
control event and answers once it is applied, so replay after a crash or a move repeats the
change at the same place and every prediction stays reproducible.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, ClassVar, cast

import orjson
from aiohttp import web as aioweb
from faust.web import Request

from streamapp import control as controls
from streamapp import records
from streamapp.web.base import Forwarded, PartitionView, Reply, WebView, ask, json_response, refuse
from streamapp.web.context import ServedPartition, WebContext

APPLY_TIMEOUT = 30.0  # seconds a change request waits for its control event to be applied
#: how long a worker waits for the owner of a partition to answer a forwarded change
FORWARD_TIMEOUT = APPLY_TIMEOUT + 5


def parse_change(context: WebContext, action: str, body: bytes) -> records.Control:
    """The control event a request's body asks for, with a new id; a 400 `Reply` if malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise refuse(400, 'the body must be a JSON object: {"model": "..."} or {"seq": N}')
    longest = context.settings.max_name_length
    if action == "promote":
        model = doc.get("model")
        if not isinstance(model, str) or not 0 < len(model) <= longest:
            raise refuse(400, f"'model' must be a model's name (1 to {longest} characters)")
        fields: dict[str, Any] = {"model": model}
    else:
        seq = doc.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 999_999_999:
            raise refuse(400, "'seq' must be the number of a kept snapshot (1 or more)")
        fields = {"seq": seq}
    value = records.encode({"id": f"control-{uuid.uuid4()}", "control": action, **fields})
    try:
        event = records.parse(value, context.limits)
    except records.BadEvent as exc:
        raise refuse(400, str(exc)) from None
    assert isinstance(event, records.Control)
    return event


class ChangeService:
    """Applies a promotion or rollback to a partition this worker serves: checks it, writes the
    signed control event into the partition's log, and waits until the processor applied it."""

    def __init__(self, context: WebContext) -> None:
        self.context = context

    async def answer(self, p: int, action: str, body: bytes) -> aioweb.Response:
        """The answer to the change `body` asks for (an error included, never raised)."""
        try:
            return await self.apply(p, action, body)
        except Reply as reply:
            return reply.response

    async def apply(self, p: int, action: str, body: bytes) -> aioweb.Response:
        """Write the change into partition `p`'s log, signed so the worker applies it, and answer
        once it is applied (202 if not within APPLY_TIMEOUT); a `Reply` for a refused request."""
        event = parse_change(self.context, action, body)
        state = self.context.serving.states.get(p)
        if state is None:
            raise refuse(503, f"partition {p} is being moved; retry shortly")
        self.check(state, p, action, event)
        topic = self.context.source_topic(p)
        if topic is None:
            raise refuse(503, f"partition {p} is being moved; retry shortly")
        offset = await self.write(topic, p, action, event)
        return await self.applied(p, offset)

    def check(self, state: ServedPartition, p: int, action: str, event: records.Control) -> None:
        """The partition has the model to promote, or keeps the snapshot to return to and was not
        rolled back too recently (429 with Retry-After)."""
        names = state.names()
        if action == "promote" and event.model not in names:
            raise refuse(404, f"partition {p} has no model {event.model!r} (models: {names})")
        if action != "rollback":
            return
        kept = [h.seq for h in self.context.serving.kept_headers(p)]
        if event.seq not in kept:
            raise refuse(404, f"partition {p} keeps no snapshot #{event.seq} (kept: {kept})")
        interval = self.context.settings.rollback_min_interval
        now = time.time()
        written = self.context.rollback_written.get(p, 0.0)
        wait = max(state.rollback_wait(now), written + interval - now if interval and written else 0.0)
        if wait > 0:
            raise refuse(
                429,
                f"partition {p} was rolled back less than {interval:g} s ago "
                f"(STREAMAPP_ROLLBACK_MIN_INTERVAL); retry in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )

    async def write(self, topic: str, p: int, action: str, event: records.Control) -> int:
        """Write the signed control event; its offset in the partition's log."""
        argument = {"model": event.model} if action == "promote" else {"seq": event.seq}
        value = records.encode({"id": event.id, "control": action, **argument})
        headers = controls.sign(self.context.serving.signer, p, event, int(time.time()) + controls.LIFETIME)
        if action == "rollback":
            self.context.rollback_written[p] = time.time()
        return await self.context.write_control(topic, p, value, headers)

    async def applied(self, p: int, offset: int) -> aioweb.Response:
        """The outcome once the processor applied the event at `offset` (409 if it refused it)."""
        states = self.context.serving.states
        deadline = time.monotonic() + APPLY_TIMEOUT
        current = states.get(p)
        while current is not None and current.offset < offset and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            current = states.get(p)
        done = [c for c in (current.changes if current is not None else ()) if c["offset"] == offset]
        if current is None or not done:
            return json_response(
                {"partition": p, "offset": offset, "outcome": "written, not applied yet"}, 202
            )
        outcome = done[0]["outcome"]
        answer = {"partition": p, "offset": offset, "outcome": outcome, "model": current.version()}
        return json_response(answer, 409 if outcome.startswith("refused") else 200)


class ChangeView(PartitionView):
    """A change of one partition, applied by its owner (the request forwarded there)."""

    action: ClassVar[str]

    async def post(self, request: Request, partition: str) -> aioweb.Response:
        context = self.context(request)
        p = self.partition(context, partition)
        body = await cast(aioweb.Request, request).read()
        # The owner answers once the change is applied: wait as long as it may.
        path = f"/models/{p}/{self.action}"
        forwarded = await self.at_owner(request, p, "POST", path, body, FORWARD_TIMEOUT)
        if forwarded is not None:
            return forwarded.relayed()
        return await ChangeService(context).apply(p, self.action, body)


class Promote(ChangeView):
    """Make another of the partition's models the champion: {"model": name} (API token)."""

    action = "promote"


class Rollback(ChangeView):
    """Return the partition's models to a kept snapshot: {"seq": N} (API token)."""

    action = "rollback"


def partition_outcome(partition: int, answer: aioweb.Response | Forwarded | str) -> dict[str, Any]:
    """One partition's entry in /promote's answer: its owner's JSON answer and status."""
    if isinstance(answer, str):
        return {"partition": partition, "status": 503, "error": answer}
    try:
        doc = orjson.loads(cast(bytes, answer.body))
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return {"partition": partition, "status": 503, "error": "its owner answered something else than JSON"}
    return {**doc, "partition": partition, "status": answer.status}


def combined(answers: list[dict[str, Any]]) -> aioweb.Response:
    """/promote's answer: the common status of every partition, or 207 for a mix."""
    statuses = {a["status"] for a in answers}
    if len(statuses) > 1:
        return json_response({"partitions": answers}, 207)
    status = statuses.pop()
    if status < 400:
        return json_response({"partitions": answers}, status)
    first = answers[0]
    why = first.get("error") or first.get("outcome") or f"answered {status}"
    return json_response(
        {"error": f"every partition answered {status}; partition 0: {why}", "partitions": answers}, status
    )


class PromoteEverywhere(WebView):
    """Promote a model on every partition: {"model": name} (API token). Each partition's owner
    writes its own control event; the answer has each partition's outcome."""

    async def post(self, request: Request) -> aioweb.Response:
        context = self.context(request)
        body = await cast(aioweb.Request, request).read()
        parse_change(context, "promote", body)
        owners = context.cluster.owners()
        missing = sorted(set(range(context.settings.partitions)) - set(owners))
        if missing:
            raise refuse(503, f"partitions {missing} have no owner right now (rebalancing); retry shortly")

        partitions = range(context.settings.partitions)
        answers = await asyncio.gather(*(self.promote(context, owners, p, body) for p in partitions))
        return combined(list(answers))

    @staticmethod
    async def promote(
        context: WebContext, owners: dict[int, str], partition: int, body: bytes
    ) -> dict[str, Any]:
        """One partition's outcome: applied here when this worker serves it, else by its owner."""
        answer: aioweb.Response | Forwarded | str
        if partition in context.serving.states:
            answer = await ChangeService(context).answer(partition, "promote", body)
        else:
            path = f"/models/{partition}/promote"
            answer = await ask(context.cluster, owners[partition], "POST", path, body, FORWARD_TIMEOUT)
        return partition_outcome(partition, answer)
