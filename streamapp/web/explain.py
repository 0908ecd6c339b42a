"""One past decision reproduced and explained: `GET /models/{partition}/explain?offset=O` answers
what `streamapp replay --partition P --offset O` prints for that offset (streamapp/replay.py).

API token: the answer shows a past event's key and features and the model's reasons, the data of
the log itself, which the read token (dashboards, scoring clients) does not give.

The partition's owner answers, from its own kept snapshots and the events and prediction records
it reads from Kafka. The replay runs in a thread with its own event loop for the Kafka reads, and
lets go of the GIL every PAUSE_EVERY seconds of work: the worker's loop only copies the kept
snapshots and waits. Each worker explains one decision at a time (429 with Retry-After while one
runs), within BOUNDS: events replayed and their bytes, prediction records read, and TIMEOUT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from aiohttp import web as aioweb
from aiokafka.errors import KafkaError
from faust.types import TP
from faust.web import Request

from streamapp import audit, replay
from streamapp.settings import Settings
from streamapp.snapshot_store import MemoryTable
from streamapp.web.base import PartitionView, json_response, parse_number, refuse

log = logging.getLogger(__name__)

#: seconds one explanation may take, Kafka reads included
TIMEOUT = 20.0
#: seconds of replay between two releases of the GIL (see replay.Bounds.pause_every)
PAUSE_EVERY = 0.0005
#: what one explanation may read and replay. Events: from the oldest kept snapshot before the
#: offset; with the default snapshots (3 kept, every 5,000 events) an offset is at most ~25,000
#: events after it. Predictions: records read from the event's time on, for its copies.
BOUNDS = replay.Bounds(
    events=50_000, log_bytes=64 * 1024 * 1024, predictions=200_000, pause_every=PAUSE_EVERY
)
#: how long a worker waits for the owner's explanation
FORWARD_TIMEOUT = TIMEOUT + 5
#: seconds a client waits when another explanation runs (most take well under one)
RETRY_AFTER = "1"

Outcome = replay.Report | audit.NotReproducible


def explain_offset(settings: Settings, table: MemoryTable, source: TP, offset: int) -> Outcome:
    """The replay of one offset within BOUNDS and TIMEOUT, on an event loop of its own (run it
    in a thread)."""
    bounds = dataclasses.replace(BOUNDS, deadline=time.monotonic() + TIMEOUT)

    async def bounded() -> list[Outcome]:
        replayed = replay.replay_partition(settings, table, source, [offset], bounds)
        return await asyncio.wait_for(replayed, TIMEOUT)

    (outcome,) = asyncio.run(bounded())
    return outcome


class Explain(PartitionView):
    """Reproduce and explain the decision for the event at ?offset=O (API token)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # one instance per worker (the route's)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="streamapp-explain")
        #: the explanation running, if any: released when its thread is done, even when the
        #: client that asked for it is gone
        self.running: Future[Outcome] | None = None

    async def get(self, request: Request, partition: str) -> aioweb.Response:
        given = cast(aioweb.Request, request).query.getall("offset", [])
        offset = parse_number(given[0]) if len(given) == 1 else None
        if offset is None:
            got = repr(given[0]) if len(given) == 1 else f"{len(given)} values"
            raise refuse(400, f"offset must be an event's offset (digits 0-9), given once; got {got}")
        context = self.context(request)
        p = self.partition(context, partition)
        path = f"/models/{p}/explain?offset={offset}"
        forwarded = await self.at_owner(request, p, "GET", path, timeout=FORWARD_TIMEOUT)
        if forwarded is not None:
            relayed = forwarded.relayed()
            if relayed.status == 429:
                relayed.headers["Retry-After"] = RETRY_AFTER
            return relayed
        state, topic = context.serving.states.get(p), context.source_topic(p)
        if state is None or topic is None:
            raise refuse(503, f"partition {p} is being moved; retry shortly")
        if offset > state.offset:
            raise refuse(404, f"partition {p} has applied offsets up to {state.offset}, not {offset} yet")
        headers = context.serving.kept_headers(p)
        try:
            BOUNDS.start(headers, [offset], p)
        except replay.TooFar as exc:
            raise refuse(422, str(exc)) from None
        if self.running is not None and not self.running.done():
            raise refuse(
                429,
                "this worker is explaining another decision (one at a time); retry shortly",
                {"Retry-After": RETRY_AFTER},
            )
        started = time.monotonic()
        # The kept snapshots a replay of the offset may start from, read here (not from the
        # thread: the processor writes the table on this loop).
        needed = any(h.offset < offset for h in headers)
        kept = context.serving.kept_snapshots(p) if needed else []
        table = replay.kept_table(p, kept, context.settings.snapshots_kept)
        self.running = self.executor.submit(explain_offset, context.settings, table, TP(topic, p), offset)
        try:
            outcome = await asyncio.wrap_future(self.running)
        except replay.TooFar as exc:
            raise refuse(422, str(exc)) from None
        except (replay.OutOfTime, TimeoutError):
            raise refuse(503, f"the explanation took longer than {TIMEOUT:g} s; retry later") from None
        except KafkaError as exc:
            raise refuse(503, f"partition {p}'s topics could not be read: {type(exc).__name__}") from None
        log.info("partition %d: offset %d explained in %.3f s", p, offset, time.monotonic() - started)
        if isinstance(outcome, audit.OutOfRange):
            raise refuse(404, str(outcome))
        if isinstance(outcome, audit.NotReproducible):
            raise refuse(422, str(outcome))
        return json_response(outcome)
