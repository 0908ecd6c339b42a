"""The registry as Confluent Cloud serves it: https with a certificate of its own CA and basic auth
(the registry's API key and secret). Here an https proxy that demands the credentials stands in
front of the real registry (Apicurio has no basic auth of its own without Keycloak)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from streamapp.registry import RegistryUnavailable, SchemaRegistry
from streamapp.settings import Secret
from tests.integration.cluster import Worker, unique_env

KEY, SECRET = "registry-api-key", "registry-api-secret-do-not-log"
SCHEMA = '{"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}'


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with Debian's openssl."""
    cert, key = directory / "registry.pem", directory / "registry.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def https_proxy(upstream: str, cert: Path, key: Path) -> Iterator[str]:
    """https://127.0.0.1:PORT/apis/ccompat/v7 in front of `upstream`, refusing without KEY:SECRET."""
    expected = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    origin = upstream.split("/apis/")[0]
    started = threading.Event()
    box: dict[str, object] = {}

    async def forward(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                origin + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")},
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    def serve() -> None:
        loop = asyncio.new_event_loop()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        box["port"] = sock.getsockname()[1]
        loop.run_until_complete(web.SockSite(runner, sock, ssl_context=context).start())
        box["loop"] = loop
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"https://127.0.0.1:{box['port']}/apis/ccompat/v7"
    finally:
        loop = box["loop"]
        loop.call_soon_threadsafe(loop.stop)  # type: ignore[attr-defined]
        thread.join(10)


@pytest.fixture
def proxied(schema_registry: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = certificate(tmp_path)
    with https_proxy(schema_registry, cert, key) as url:
        yield url, cert


def test_basic_auth_over_tls_with_a_private_ca(proxied: tuple[str, Path]) -> None:
    url, ca = proxied

    async def scenario() -> None:
        registry = SchemaRegistry(url, KEY, Secret(SECRET), str(ca))
        try:
            await registry.check()
            schema_id = await registry.register(f"auth-{id(registry)}-value", SCHEMA)
            found = await registry.schema(schema_id)
            assert found is not None and found.text == SCHEMA
            assert await registry.schema(987_654_321) is None
        finally:
            await registry.close()
        wrong = SchemaRegistry(url, KEY, Secret("not-the-secret"), str(ca))
        with pytest.raises(RegistryUnavailable, match="refused the credentials"):
            await wrong.schema(1)
        await wrong.close()
        untrusted = SchemaRegistry(url, KEY, Secret(SECRET))  # the system CAs never signed it
        with pytest.raises(RegistryUnavailable, match=r"(?i)certificate"):
            await untrusted.check()
        await untrusted.close()

    asyncio.run(scenario())


def test_a_worker_with_the_wrong_secret_stops_at_start_and_never_shows_it(
    proxied: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = proxied
    env = unique_env(
        2,
        input_format="avro",
        schema_registry_url=url,
        schema_registry_username=KEY,
        schema_registry_password="a-wrong-secret-do-not-log",
        schema_registry_cafile=str(ca),
    )
    worker = Worker(env, tmp_path / "w1")
    assert worker.run_until_exit(60) != 0
    log = worker.log_tail(400)
    assert "refused the credentials" in log and "STREAMAPP_SCHEMA_REGISTRY_USERNAME" in log, log
    assert "a-wrong-secret-do-not-log" not in log
