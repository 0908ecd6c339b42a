"""Every private name of Faust, aiokafka, aiohttp and River that streamapp uses, in one place.

Each entry says which public API is missing. The rest of the package touches none of these
names (ruff's SLF rule holds it to that), and tests/unit/test_seam.py checks every one of them,
with the signature of every overridden method, against the pinned versions: an upgrade that
renames `_new_offset` fails a test instead of silently stopping commits.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import faust
from aiohttp import web as aioweb
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from aiokafka import AIOKafkaProducer, TopicPartition
from faust import streams as faust_streams
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.transports import ProducerT, TransportT
from faust.web.drivers.aiohttp import Web as AiohttpWeb

# -- Faust's consumer ------------------------------------------------------------------------------


class ConsumerSeam(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with its private steps opened as public hooks.

    Faust has no API to take fetched records off its per-message path, to add offsets of its
    own to a commit, or to act before a commit; these four private methods are where it does
    each. Subclasses implement the hooks, never the private methods.
    """

    async def route_fetched(self, records: Mapping[Any, Any], active: set[TP] | None) -> Mapping[Any, Any]:
        """Take what the subclass handles itself out of one fetch; the rest goes Faust's way."""
        return records

    def extra_commit_tps(self) -> Iterable[TP]:
        """Partitions with offsets to commit that Faust's own acks do not know of."""
        return ()

    def next_offset(self, tp: TP) -> int | None:
        """The offset to commit for `tp` (None: Faust's own)."""
        return None

    async def before_commit(self) -> None:
        """Runs before every commit (the outputs of what is committed must be delivered)."""

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        if not records:
            return records, active
        return await self.route_fetched(records, active), active

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        pending = list(super()._filter_tps_with_pending_acks(topics))
        for tp in self.extra_commit_tps():
            if tp not in pending and (topics is None or tp in topics or tp.topic in topics):
                pending.append(tp)
        return iter(pending)

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        await self.before_commit()
        return await super()._commit_offsets(offsets, start_new_transaction)

    def _new_offset(self, tp: TP) -> int | None:
        ours = self.next_offset(tp)
        return ours if ours is not None else super()._new_offset(tp)

    async def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of `tp`, read from the broker, without seeking (Faust's
        seek_to_committed moves every partition)."""
        consumer = self._thread._ensure_consumer()
        committed = await self._thread.call_thread(consumer.committed, TopicPartition(tp.topic, tp.partition))
        return cast(int | None, committed)

    async def refresh_unknown_topics(self) -> set[str]:
        """Subscribed topics the consumer's metadata does not know; if any, ask the broker again.

        A topic created a moment before the consumer's first metadata request (the worker's own
        internal topics at a first start) can be missing from the answer, and aiokafka asks
        again only after metadata_max_age_ms (5 minutes): until then the group leader assigns
        none of its partitions (seen: "Ignoring missing topic", the sequence topic unserved).
        A refresh that finds it changes the leader's metadata snapshot, and aiokafka rebalances.
        aiokafka's client, which holds the metadata, is private to its consumer."""
        consumer = self._thread._ensure_consumer()

        async def refresh() -> set[str]:
            missing = set(consumer.subscription()) - set(consumer._client.cluster.topics())
            if missing:
                await consumer._client.force_metadata_update()
            return missing

        return cast(set[str], await self._thread.call_thread(refresh))

    async def pause_in_client(self, tps: Iterable[TP]) -> None:
        """Pause partitions in aiokafka itself (Faust's pause only filters what it hands on);
        Faust keeps its aiokafka consumer, and the thread that owns it, private."""
        consumer = self._thread._ensure_consumer()
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]

        async def pause() -> None:
            assigned = consumer.assignment()
            consumer.pause(*(tp for tp in wanted if tp in assigned))

        await self._thread.call_thread(pause)


async def commit(consumer: Any, offsets: Mapping[TP, int]) -> bool:
    """Commit exactly these offsets now: Faust's public commit takes only its own acks."""
    return bool(await consumer._commit(offsets))


class AppSeam(faust.App):
    """A Faust app whose transport a subclass chooses: Faust has no setting for the driver class."""

    def new_transport(self) -> TransportT:
        return super()._new_transport()

    def _new_transport(self) -> TransportT:
        return self.new_transport()


# -- Faust's producer and tables -------------------------------------------------------------------


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer, idempotent: a retried send after a broker or leader change
    never writes a record twice. Faust sets idempotence only for its own exactly-once mode and
    has no setting for it; its private `_settings_extra` is where it does."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def aiokafka_producer(producer: ProducerT) -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's, for its record-batch API (create_batch and
    send_batch), which Faust does not expose."""
    return cast(faust_aiokafka.Producer, producer)._ensure_producer()


@contextmanager
def current_event(app: faust.App, tp: TP) -> Iterator[None]:
    """Run a table write as if an event of `tp` were being processed: Faust's table picks the
    changelog partition and the RocksDB database from the current event, and only its stream
    iterator can set one."""
    message = Message(tp.topic, tp.partition, -1, time.time(), 0, None, None, None, None, tp=tp)
    event = app.create_event(None, None, None, message)
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


# -- aiohttp, under Faust's web server -------------------------------------------------------------

#: (status, reason) -> the answer to a request aiohttp refused before any middleware ran
ProtocolError = Callable[[int, str], aioweb.StreamResponse]


def answer_protocol_errors(app: faust.App, answer: ProtocolError) -> None:
    """Let `answer` write what aiohttp refuses at the connection level (a malformed request line
    or header: 400, ...), which no middleware sees. aiohttp has no hook for it, and Faust builds
    its runner privately in Web.__init__ (started with the worker): swap that runner first."""
    driver = app.web
    if not isinstance(driver, AiohttpWeb):
        return

    class Handler(RequestHandler):
        def handle_error(
            self,
            request: aioweb.BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> aioweb.StreamResponse:
            super().handle_error(request, status, exc, message)  # logs; raises if already answering
            response = answer(status, message or "")
            response.force_close()
            return response

    class JsonServer(Server):
        def __call__(self) -> RequestHandler:
            return Handler(self, loop=self._loop, **self._kwargs)

    class Runner(aioweb.AppRunner):
        async def _make_server(self) -> Server:
            server = await super()._make_server()
            server.__class__ = JsonServer
            return server

    driver._runner = Runner(driver.web_app, access_log=None)


# -- River ---------------------------------------------------------------------------------------


def model_parameters(model: Any) -> dict[str, Any]:
    """The parameters a River estimator was built with (River's `_get_params`; `clone` uses it,
    and no public accessor exists)."""
    return cast(dict[str, Any], model._get_params())


def model_memory_bytes(model: Any) -> int:
    """A River estimator's size in memory, in bytes (River's `_raw_memory_usage`; its only
    other form, `_memory_usage`, is a formatted string and private too)."""
    return int(model._raw_memory_usage)
