"""The guard every request passes first: the API table's routes only, its access level, and
every error as JSON `{"error": reason}` (aiohttp's own included).

Routes outside the API table (streamapp/openapi.py) are 404, so Faust's built-in views are never
served; the table's access level is checked (streamapp/access.py), a worker's signature
(streamapp/peers.py) standing in for a forwarded client's token. An unexpected exception is
logged and answered 500: a bug, which the fuzz tests look for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

from aiohttp import web as aioweb

from streamapp import openapi
from streamapp.access import OPEN
from streamapp.web.base import PEER, SECURITY_HEADERS, error_response, json_response
from streamapp.web.context import context_of

log = logging.getLogger(__name__)

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


def from_http_exception(request: aioweb.BaseRequest, exc: aioweb.HTTPException) -> aioweb.Response:
    """aiohttp's own error answer (404, 405, 413, ...) as JSON, with its headers."""
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


async def checked(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
    """The request's route is in the API table and its access level is met; then the view."""
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
    context = context_of(request)
    peer = False
    if op.access != OPEN and context.verifier.claims_peer(request.headers):
        body = await request.read()
        why = context.verifier.verify(request.method, request.raw_path, body, request.headers)
        if why is not None:
            return error_response(401, why)
        peer = True
    request[PEER] = peer
    refused = context.tokens.check(op.access, request.headers, peer)
    if refused is not None:
        challenge = {"WWW-Authenticate": 'Bearer realm="streamapp"'} if refused.status == 401 else None
        return error_response(refused.status, refused.reason, challenge)
    # keys() lists a repeated name once: items() has every occurrence
    bad_query = openapi.unknown_query(op, [name for name, _ in request.query.items()])
    if bad_query is not None:
        return error_response(400, bad_query)
    return await handler(request)


@aioweb.middleware
async def guard(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
    """Every request's middleware: `checked`, JSON errors, a logged JSON 500 for anything
    unexpected, and the security headers on every answer."""
    try:
        response = await checked(request, handler)
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("streamapp: %s %r failed", request.method, request.path)
        return error_response(500, "internal error (logged by the worker)")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
