"""Faust's Kafka consumer, handing the source topic's records to streamapp one fetch at a time.

Why: Faust delivers each record through its conductor, a queue and a stream iterator, and its
drain loop wraps every record in two tasks; with a fast model that machinery cost about three
times the model itself (bench/RESULTS.md). streamapp's exactness rests on none of it (the
partition state guards offsets, snapshots carry theirs), so the source topic's records skip it.
Everything else (standby changelogs, the input of the STREAMAPP_KEY_FIELD repartition hop) keeps
Faust's path, and Faust still owns membership, assignment, tables, recovery and commits.

What Faust's path did for these records, this does too:
- stop at once when a rebalance stops the flow, changes the generation or pauses the partition,
  and make the rebalance's "wait for events in progress" (`wait_empty`) wait for the batch;
- commit, through Faust's own commit (which flushes the producer first), the offset after the
  last event the model applied;
- keep the monitor's inbound time fresh, so Faust's slow-processing checks stay truthful.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from time import monotonic
from typing import Any, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import ProducerT, TransportT
from mode import ServiceT

from streamapp.seam import AppSeam, ConsumerSeam, IdempotentProducer

#: (partition, its fetched records, "still ours?") -> offset of the last event the model applied
BatchHandler = Callable[[TP, Sequence[Any], Callable[[], bool]], Awaitable[int | None]]


class BatchConsumer(ConsumerSeam):
    """The aiokafka consumer of Faust, with one topic's records routed to a batch handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_offsets: dict[TP, int] = {}
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()
        #: partitions whose position is their model's, not the committed offset (exactly_once)
        self.held: set[TP] = set()

    async def route_fetched(self, records: Mapping[Any, Any], active: set[TP] | None) -> Mapping[Any, Any]:
        routes = cast(BatchApp, self.app).batch_routes
        if not routes:
            return records
        rest = {}
        for fetched, batch in records.items():
            handler = next((h for is_routed, h in routes if is_routed(fetched.topic)), None)
            if handler is not None:
                await self._deliver(handler, TP(fetched.topic, fetched.partition), batch, active)
            else:
                rest[fetched] = batch
        return rest

    async def _deliver(
        self, handler: BatchHandler, tp: TP, batch: Sequence[Any], active: set[TP] | None
    ) -> None:
        generation = self.app.consumer_generation_id

        def current() -> bool:
            # `active` is the consumer's live set: pausing the partition removes it.
            return (
                self.flow_active
                and self.app.consumer_generation_id == generation
                and (active is None or tp in active)
            )

        if not current():
            return
        self._batch_idle.clear()
        # Shielded: a stopping worker cancels this fetch loop, but the batch in progress still
        # finishes (at its next event, as the flow has stopped) and hands its outputs over.
        await asyncio.shield(self._run_batch(handler, tp, batch, current))

    async def _run_batch(
        self, handler: BatchHandler, tp: TP, batch: Sequence[Any], current: Callable[[], bool]
    ) -> None:
        try:
            applied = await handler(tp, batch, current)
            if applied is not None:
                self._next_offsets[tp] = applied + 1
            self.app.monitor.stream_inbound_time[tp] = monotonic()
        finally:
            self._batch_idle.set()

    async def wait_empty(self) -> None:
        """A rebalance and a stopping worker wait here for events in progress: the batch is one
        of them (and its offsets are committed after it)."""
        await self._batch_idle.wait()
        app = cast(BatchApp, self.app)
        if app.on_commit is not None:
            # Faust commits here only if it has offsets of its own to commit.
            await app.on_commit()
        await super().wait_empty()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.held -= revoked
        # Faust's revocation waits for the batch in progress and commits: the revoked partitions'
        # offsets go in that commit (their next owner replays less), and only then are forgotten.
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._next_offsets.pop(tp, None)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust seeks every partition to its committed offset after recovery (and whenever it
        fetches while the flow is stopped); a held partition goes to its model's position instead.
        With exactly_once the committed offset is the transactions' and must not be rewound to
        the model's, so the position is the model's own (BatchApp.model_positions). The answer
        is still the committed offsets: recovery reads them here."""
        committed = await super().seek_to_committed()
        app = cast(BatchApp, self.app)
        if not self.held or app.model_positions is None:
            return committed
        assigned = self.assignment()
        moves = app.model_positions([tp for tp in self.held if tp in committed and tp in assigned])
        if moves:
            await self.seek_wait(moves)
        return committed

    def extra_commit_tps(self) -> Iterable[TP]:
        return self._next_offsets

    async def before_commit(self) -> None:
        # At least once: the outputs of the events being committed are delivered first (Faust
        # flushes its own producer in there too). Exactly once: the open transactions commit.
        app = cast(BatchApp, self.app)
        await app.output_producer.flush()
        if app.on_commit is not None:
            await app.on_commit()

    def next_offset(self, tp: TP) -> int | None:
        return self._next_offsets.get(tp)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
    Producer = IdempotentProducer


class BatchApp(AppSeam):
    """A Faust app whose consumer routes some topics' records to batch handlers, with a producer
    of its own for the handlers' outputs."""

    #: (are this topic's records for the handler?, the handler), the first match wins; none
    #: matching: Faust's path
    batch_routes: Sequence[tuple[Callable[[str], bool], BatchHandler]] = ()
    #: awaited before any Kafka client of the app starts (streamapp checks its credentials there)
    preflight: Callable[[], Awaitable[None]] | None = None
    #: awaited before every commit of the consumer (at a rebalance and at stop too)
    on_commit: Callable[[], Awaitable[None]] | None = None
    #: awaited in turn when the worker stops, once the batch in progress is done
    on_stopping: tuple[Callable[[], Awaitable[None]], ...] = ()
    #: the model's position (next offset) of held source partitions (BatchConsumer.seek_to_committed)
    model_positions: Callable[[Iterable[TP]], dict[TP, int]] | None = None
    _output_producer: ProducerT | None = None

    def new_transport(self) -> TransportT:
        return BatchTransport(self.conf.broker_consumer, self)

    @property
    def output_producer(self) -> ProducerT:
        """Predictions leave through this one, table changelogs through `producer`: aiokafka has
        one produce request in flight per broker, so a snapshot of many MB would otherwise hold
        up every prediction queued behind it. Same settings and credentials as Faust's own."""
        if self._output_producer is None:
            # BatchTransport: idempotent, like Faust's own producer (seam.IdempotentProducer)
            self._output_producer = self.transport.create_producer(beacon=self.beacon)
        return self._output_producer

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*super().on_init_dependencies(), self.output_producer]

    async def on_stop(self) -> None:
        await super().on_stop()  # stops the flow and waits for the batch in progress
        for stopping in self.on_stopping:
            await stopping()

    async def on_first_start(self) -> None:
        # The app's first hook: its consumer, producers and web server start after it.
        if self.preflight is not None:
            await self.preflight()
        await super().on_first_start()
