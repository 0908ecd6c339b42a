"""Probes and documents, open to anyone: liveness, readiness, and the OpenAPI document."""

from __future__ import annotations

from typing import Any, cast

import faust
from aiohttp import web as aioweb
from faust.web import Request

from streamapp.web.base import WebView, json_response


def readiness(app: faust.App) -> tuple[bool, str]:
    """(ready, why): the worker joined the group and recovered its tables."""
    if app.rebalancing:
        return False, "rebalancing"
    # TableManagerT's stubs omit the recovery service the manager has.
    if not cast(Any, app.tables).recovery.completed.is_set():
        return False, "recovering the tables"
    return True, "ok"


class Health(WebView):
    """The process answers (liveness)."""

    async def get(self, request: Request) -> aioweb.Response:
        return json_response({"status": "ok"})


class Ready(WebView):
    """Joined the group and recovered its partitions (readiness): 503 until then."""

    async def get(self, request: Request) -> aioweb.Response:
        context = self.context(request)
        is_ready, why = context.ready()
        body = {"ready": is_ready, "state": why, "partitions": sorted(context.serving.states)}
        return json_response(body, 200 if is_ready else 503)


class OpenAPI(WebView):
    """The HTTP API as an OpenAPI 3 document (streamapp/openapi.py), for clients and fuzzers."""

    async def get(self, request: Request) -> aioweb.Response:
        return aioweb.Response(body=self.context(request).api_document, content_type="application/json")
