"""What every view shares: JSON answers, the `Reply` that ends a view early, and the base views.

`PartitionView` resolves the `{partition}` path parameter (404 for one that does not exist) and
decides where a partition's request is answered: here when this worker serves the partition,
else by its owner (the request forwarded, signed, and the owner's answer relayed), else 503.
Helpers raise `Reply` instead of returning "a value or a response", so a view reads straight on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.web import Request, View
from faust.web.exceptions import WebError

from streamapp.peers import NotContacted
from streamapp.web.context import Cluster, WebContext, context_of

#: the request key under which the middleware records a verified worker-to-worker request
#: (aiohttp 3.13 typed request keys; a plain string before, as the pinned range allows)
PEER: Any = aioweb.RequestKey("streamapp.peer", bool) if hasattr(aioweb, "RequestKey") else "streamapp.peer"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
_NUMBER = re.compile("[0-9]{1,9}")


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


class Reply(WebError):
    """A view's answer decided part-way (a refusal, or the owner's answer relayed)."""

    def __init__(self, response: aioweb.Response) -> None:
        super().__init__(code=response.status)
        self.response = response


def refuse(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Reply:
    """The `Reply` of an error: `raise refuse(404, "...")`."""
    return Reply(error_response(status, reason, headers))


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An owner's answer to a forwarded request."""

    status: int
    body: bytes
    content_type: str

    def relayed(self) -> aioweb.Response:
        return aioweb.Response(body=self.body, status=self.status, content_type=self.content_type)


async def ask(
    cluster: Cluster, owner: str, method: str, path_qs: str, body: bytes | None, timeout: float | None
) -> Forwarded | str:
    """The owner's answer, or why there is none (never contacted, no answer, a 5xx)."""
    try:
        status, content, content_type = await cluster.ask(owner, method, path_qs, body, timeout)
    except NotContacted as exc:
        return str(exc)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"its owner {owner!r} does not answer ({exc!r})"
    if status >= 500 or content_type not in ("application/json", "application/octet-stream"):
        return f"its owner {owner!r} answered {status} ({content_type})"
    return Forwarded(status, content, content_type)


class WebView(View):
    """A view of streamapp: its context comes from the application, a `Reply` is its answer."""

    @staticmethod
    def context(request: Request) -> WebContext:
        return context_of(request)

    async def on_request_error(self, request: Request, exc: WebError) -> Any:
        if isinstance(exc, Reply):
            return exc.response
        return await super().on_request_error(request, exc)


class PartitionView(WebView):
    """A view of one partition, `{partition}` in its path: answered where the partition lives."""

    @staticmethod
    def partition(context: WebContext, raw: str) -> int:
        """The partition's number; a 404 `Reply` for one that does not exist."""
        partitions = context.settings.partitions
        p = parse_number(raw)
        if p is None or p >= partitions:
            raise refuse(404, f"no partition {raw!r}: partitions are 0..{partitions - 1}")
        return p

    async def at_owner(
        self,
        request: Request,
        partition: int,
        method: str,
        path_qs: str,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Forwarded | None:
        """None when this worker serves `partition`, else the owner's answer; a 503 `Reply`
        when there is none (no owner, it does not answer, or the request came from a worker)."""
        context = self.context(request)
        if partition in context.serving.states:
            return None
        me = context.cluster.me
        if cast(aioweb.Request, request).get(PEER):
            raise refuse(503, f"partition {partition} is not served by {me!r} (any more)")
        owner = context.cluster.owners().get(partition)
        if owner is None or owner == me:
            raise refuse(503, f"partition {partition} has no owner right now (rebalancing); retry shortly")
        answer = await ask(context.cluster, owner, method, path_qs, body, timeout)
        if isinstance(answer, str):
            raise refuse(503, f"partition {partition}: {answer}")
        return answer

    async def served_here(self, request: Request, raw: str, path: str) -> int:
        """The partition's number when this worker serves it; else the owner's answer to the same
        GET (`path` with {p}) is the `Reply`, or why there is none, or a 404 for no such partition."""
        p = self.partition(self.context(request), raw)
        forwarded = await self.at_owner(request, p, "GET", path.format(p=p))
        if forwarded is not None:
            raise Reply(forwarded.relayed())
        return p
