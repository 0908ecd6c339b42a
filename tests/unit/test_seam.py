"""The private names of Faust, aiokafka, aiohttp and River that streamapp/seam.py uses still
exist, and the methods it overrides still have the signatures it overrides them with.

Pinned versions keep them today; this is what tells an upgrade that one was renamed (a renamed
`_new_offset` would otherwise silently stop streamapp's commits).
"""

from __future__ import annotations

import contextvars
import inspect
from typing import Any

import faust
import pytest
from aiohttp import web as aioweb
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from aiokafka import AIOKafkaClient, AIOKafkaConsumer
from faust import streams as faust_streams
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from river import base, tree

from streamapp import seam


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (seam.ConsumerSeam._wait_next_records, faust_aiokafka.Consumer._wait_next_records),
        (
            seam.ConsumerSeam._filter_tps_with_pending_acks,
            faust_aiokafka.Consumer._filter_tps_with_pending_acks,
        ),
        (seam.ConsumerSeam._commit_offsets, faust_aiokafka.Consumer._commit_offsets),
        (seam.ConsumerSeam._new_offset, faust_aiokafka.Consumer._new_offset),
        (seam.AppSeam._new_transport, faust.App._new_transport),
        (seam.IdempotentProducer._settings_extra, faust_aiokafka.Producer._settings_extra),
        (aioweb.AppRunner._make_server, aioweb.BaseRunner._make_server),
    ],
    ids=lambda f: getattr(f, "__qualname__", str(f)),
)
def test_every_overridden_private_method_keeps_its_signature(ours: Any, theirs: Any) -> None:
    assert ours is not theirs and parameters(ours) == parameters(theirs)


def test_every_private_name_the_seam_uses_still_exists() -> None:
    assert callable(faust_aiokafka.Consumer._commit)
    assert callable(faust_aiokafka.AIOKafkaConsumerThread._ensure_consumer)
    assert callable(faust_aiokafka.AIOKafkaConsumerThread.call_thread)
    assert "self._thread" in inspect.getsource(faust_aiokafka.Consumer)
    assert callable(faust_aiokafka.Producer._ensure_producer)
    # Faust merges _settings_extra last into its aiokafka producer's arguments
    assert "**self._settings_extra()" in inspect.getsource(faust_aiokafka.Producer._new_producer)
    assert isinstance(faust_streams._current_event, contextvars.ContextVar)
    # aiokafka's consumer keeps its client, which holds the metadata, as _client
    assert "self._client = AIOKafkaClient(" in inspect.getsource(AIOKafkaConsumer.__init__)
    assert callable(AIOKafkaClient.force_metadata_update)
    assert "self.cluster = ClusterMetadata(" in inspect.getsource(AIOKafkaClient.__init__)
    assert "self._runner: AppRunner = AppRunner(" in inspect.getsource(AiohttpWeb.__init__)
    server = inspect.getsource(Server.__init__)
    assert "self._loop" in server and "self._kwargs" in server
    assert parameters(RequestHandler.handle_error) == ["self", "request", "status", "exc", "message"]
    assert callable(base.Estimator._get_params)
    assert seam.model_memory_bytes(tree.HoeffdingTreeClassifier()) > 0
    assert seam.model_parameters(tree.HoeffdingTreeClassifier(max_depth=3))["max_depth"] == 3


def test_every_producer_of_the_worker_waits_for_all_replicas_and_is_idempotent() -> None:
    from streamapp.application import create_app
    from streamapp.settings import Settings
    from tests import TEST_SIGNING_KEY

    app = create_app(Settings.from_env({"STREAMAPP_SIGNING_KEY": TEST_SIGNING_KEY}))
    for producer in (app.producer, app.output_producer):  # type: ignore[attr-defined]
        extra = producer._settings_extra()
        assert extra["enable_idempotence"] is True and extra["acks"] == "all"
