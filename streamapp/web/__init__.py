"""Web views: every model of the cluster from any worker, scoring on request, probes, dashboard.

Any worker answers for the whole cluster, forwarding a partition's requests to its owner (see
base.py). Views only read what the processor owns, through the one Protocol of context.py;
nothing that arrives over HTTP is ever unpickled. Every request passes the guard of
middleware.py first (routes, access levels, JSON errors).

Modules, by resource: models.py (/models, /models/local, /models/{partition}), snapshots.py,
changes.py (promote, rollback, /promote), scoring.py (/predict, /models/{partition}/predict),
explain.py (/models/{partition}/explain), probes.py (/health, /ready, /openapi.json),
dashboard.py (/).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import faust
from faust.web import View
from faust.web.base import BlueprintManager
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streamapp import seam
from streamapp.peers import Peers, PeerVerifier
from streamapp.settings import Settings
from streamapp.web.changes import Promote, PromoteEverywhere, Rollback
from streamapp.web.context import CONTEXT, Serving, WebContext
from streamapp.web.dashboard import Dashboard
from streamapp.web.explain import Explain
from streamapp.web.middleware import guard, protocol_error
from streamapp.web.models import LocalModels, Model, Models
from streamapp.web.probes import Health, OpenAPI, Ready, readiness
from streamapp.web.scoring import PartitionPredict, Predict, partition_of
from streamapp.web.snapshots import Snapshot, Snapshots

__all__ = ["VIEWS", "WebContext", "mount", "partition_of", "register"]

#: every view and its path, in routing order (/models/local before /models/{partition})
VIEWS: tuple[tuple[str, type[View]], ...] = (
    ("/models/local", LocalModels),
    ("/models", Models),
    ("/models/{partition}", Model),
    ("/models/{partition}/snapshots", Snapshots),
    ("/models/{partition}/snapshot", Snapshot),
    ("/models/{partition}/explain", Explain),
    ("/models/{partition}/promote", Promote),
    ("/models/{partition}/rollback", Rollback),
    ("/promote", PromoteEverywhere),
    ("/models/{partition}/predict", PartitionPredict),
    ("/predict", Predict),
    ("/health", Health),
    ("/ready", Ready),
    ("/openapi.json", OpenAPI),
    ("/", Dashboard),
)


async def write_control(
    app: faust.App, topic: str, partition: int, value: bytes, headers: list[tuple[str, bytes]]
) -> int:
    """Write a control event with Faust's producer; its offset."""
    written = await app.producer.send_and_wait(topic, None, value, partition, None, headers)
    return written.offset


def mount(app: faust.App, context: WebContext) -> None:
    """Serve the views of `context` on `app`'s web server, behind the guard."""
    # Faust's built-in views (/router: the cluster's URLs; its "/" index) are not ours: none is
    # mounted, and the guard answers 404 for any route outside the API table anyway.
    app.web.blueprints = BlueprintManager()
    web_app = cast(AiohttpWeb, app.web).web_app
    web_app[CONTEXT] = context
    web_app.middlewares.append(guard)
    for path, view in VIEWS:
        app.page(path)(view)


def register(
    app: faust.App,
    processor: Serving,
    settings: Settings,
    changelog_topic: str,
    lag: Callable[[int], int | None],
    source_topic: Callable[[int], str | None],
) -> None:
    """Add the views to `app`. `lag(partition)` gives the events not yet applied (or None);
    `source_topic(partition)` the topic the partition's events are read from (or None)."""
    context = WebContext(
        serving=processor,
        settings=settings,
        cluster=Peers(app, changelog_topic, processor.signer, settings.peer_url_pattern),
        verifier=PeerVerifier(processor.signer),
        lag=lag,
        source_topic=source_topic,
        ready=partial(readiness, app),
        write_control=partial(write_control, app),
    )
    mount(app, context)
    seam.answer_protocol_errors(app, protocol_error)
