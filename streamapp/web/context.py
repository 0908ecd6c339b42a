"""What the web views need, in one object that lives on the aiohttp application.

The core is reached only through `Serving` (the processor) and `ServedPartition` (a partition's
state): the names listed there are all the views use of it, so a change of the core is adapted
here. A unit test builds a `WebContext` around fakes of these Protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
from aiohttp import web as aioweb

from streamapp import openapi, records, snapshot
from streamapp.access import Tokens
from streamapp.peers import PeerVerifier
from streamapp.settings import Settings
from streamapp.signing import Signer

#: probe batches scored at once per worker: more wait, so that scoring cannot starve learning
SCORING_CONCURRENCY = 2


class Counts(Protocol):
    """A latency histogram (streamapp.histogram.Histogram): its count per bucket."""

    @property
    def counts(self) -> list[int]: ...


class Timings(Protocol):
    """One partition's latency histograms and output counts (processor.Timing)."""

    @property
    def predict(self) -> Counts: ...
    @property
    def learn(self) -> Counts: ...
    @property
    def end_to_end(self) -> Counts: ...
    @property
    def predictions(self) -> int: ...
    @property
    def alerts(self) -> int: ...


class LearnedKinds(Protocol):
    """The feature kinds a partition learned (schema.LearnedSchema), which a probe must keep."""

    def check_features(self, x: dict[str, records.Feature]) -> bool: ...  # raises BadEvent


class ServedPartition(Protocol):
    """What the views read of one partition's state (partition.PartitionState)."""

    @property
    def partition(self) -> int: ...
    @property
    def model(self) -> Any: ...  # the champion's River model
    @property
    def offset(self) -> int: ...  # the last source offset applied
    @property
    def changes(self) -> Sequence[dict[str, Any]]: ...  # the last promotions and rollbacks
    @property
    def schema(self) -> LearnedKinds: ...

    def summary(self, now: float) -> dict[str, Any]: ...
    def names(self) -> list[str]: ...
    def version(self) -> dict[str, Any]: ...
    def predict(self, x: dict[str, records.Feature]) -> dict[str, Any]: ...
    def rollback_wait(self, at: float) -> float: ...


class Serving(Protocol):
    """The processor as the views see it: what each partition serves, and its kept snapshots."""

    @property
    def states(self) -> Mapping[int, ServedPartition]: ...
    @property
    def timings(self) -> Mapping[int, Timings]: ...
    @property
    def signer(self) -> Signer: ...

    def kept_headers(self, partition: int) -> list[snapshot.Header]: ...
    def kept_snapshots(self, partition: int) -> list[tuple[snapshot.Header, bytes]]: ...


class Cluster(Protocol):
    """Who serves which partition and how to ask them (streamapp.peers.Peers)."""

    @property
    def me(self) -> str: ...

    def owners(self) -> dict[int, str]: ...

    async def ask(
        self, url: str, method: str, path_qs: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes, str]: ...


#: writes a signed control event (topic, partition, value, headers) and gives its offset
WriteControl = Callable[[str, int, bytes, list[tuple[str, bytes]]], Awaitable[int]]


@dataclass
class WebContext:
    """Everything a view reads: built once by `register`, or by a test around fakes."""

    serving: Serving
    settings: Settings
    cluster: Cluster
    verifier: PeerVerifier
    #: events of a partition not yet applied (None: unknown)
    lag: Callable[[int], int | None]
    #: the topic a partition's events are read from (None: not held by this worker)
    source_topic: Callable[[int], str | None]
    #: (ready, why): joined the group and recovered its partitions
    ready: Callable[[], tuple[bool, str]]
    write_control: WriteControl
    tokens: Tokens = field(init=False)
    limits: records.Limits = field(init=False)
    #: the OpenAPI document of these settings, as served
    api_document: bytes = field(init=False)
    #: limits the probe batches scored at once
    scoring: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SCORING_CONCURRENCY))
    #: wall time this worker last wrote each partition's rollback (the log's own time comes later)
    rollback_written: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = Tokens(self.settings.read_token, self.settings.api_token)
        self.limits = records.Limits.from_settings(self.settings)
        self.api_document = orjson.dumps(openapi.document(self.settings))


#: where the views find the context: on the aiohttp application that routes to them
CONTEXT = aioweb.AppKey("streamapp.web.context", WebContext)


def context_of(request: Any) -> WebContext:
    """The context of the application `request` came in through."""
    return cast(aioweb.Request, request).app[CONTEXT]
