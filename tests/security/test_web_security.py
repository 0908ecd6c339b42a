"""Attacks on the web layer with real workers: what a forwarded request carries (seen on the
wire by a recording proxy in front of the owner), replayed and altered peer requests, an owner
whose advertised URL is outside the peer pattern, and markup in everything the dashboard shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aioweb
from playwright.sync_api import sync_playwright

from streamapp import peers
from streamapp.settings import Secret, Settings
from streamapp.signing import Signer
from tests.integration.chaos import start_producer
from tests.integration.cluster import Worker, free_port, running, unique_env, wait_for

PARTITIONS = 4
API_TOKEN = "security-api-token-0123456789abc"
READ_TOKEN = "security-read-token-0123456789ab"
MARKUP = "<img src=x onerror=window.__pwned=1>"


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@dataclass
class RecordingProxy:
    """An HTTP server on 127.0.0.1 that a worker advertises as its URL: it records each request
    (method, path, headers, body) and passes it on, unchanged, to the worker's real port."""

    prefix: str
    target: int
    port: int = field(default_factory=free_port)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    async def _handle(self, request: aioweb.Request) -> aioweb.Response:
        body = await request.read()
        path = request.raw_path.removeprefix(self.prefix)
        self.seen.append((request.method, path, dict(request.headers), body))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, f"http://127.0.0.1:{self.target}{path}", data=body or None, headers=headers
            ) as answer,
        ):
            return aioweb.Response(
                body=await answer.read(), status=answer.status, content_type=answer.content_type
            )

    def start(self) -> RecordingProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = aioweb.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = aioweb.AppRunner(app)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(aioweb.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Worker, Worker, RecordingProxy]]:
    """w1, and w2 reached only through a recording proxy (the URL w2 advertises)."""
    env = unique_env(
        PARTITIONS,
        api_token=API_TOKEN,
        read_token=READ_TOKEN,
        peer_url_pattern=r"http://127\.0\.0\.1:[0-9]+(/peer:[0-9]+)?",
        session_timeout="6",
    )
    w1 = Worker(env, tmp_path / "w1")
    w2 = Worker(dict(env), tmp_path / "w2")
    proxy = RecordingProxy(prefix=f"/peer:{w2.port}", target=w2.port).start()
    # Faust advertises http://{web_host}:{web_port}: http://127.0.0.1:<proxy>/peer:<w2's port>
    w2.env["STREAMAPP_WEB_HOST"] = f"127.0.0.1:{proxy.port}/peer"
    try:
        w1.start()
        w2.start()
        wait_for("both workers to serve partitions", lambda: spread(w1, w2), 90, w2.log_tail)
        yield w1, w2, proxy
    finally:
        w1.stop()
        w2.stop()
        proxy.stop()


def spread(*workers: Worker) -> bool:
    served = [set(w.models()) for w in workers]
    return (
        all(served)
        and set().union(*served) == set(range(PARTITIONS))
        and all((w.get("/ready") or {}).get("ready") for w in workers)
    )


def test_a_forwarded_request_carries_a_signature_never_the_client_s_token(
    proxied: tuple[Worker, Worker, RecordingProxy],
) -> None:
    w1, w2, proxy = proxied
    signer = Signer.from_settings(Settings.from_env(w2.env))  # the workers' key and app id
    theirs = sorted(w2.models())
    partition = theirs[0]
    asks: list[tuple[str, str, Any]] = [
        ("GET", f"/models/{partition}", None),
        ("GET", f"/models/{partition}/snapshots", None),
        ("POST", f"/models/{partition}/predict", {"x": [{"amount": 3.0}]}),
        ("GET", f"/models/{partition}/snapshot", None),
        ("POST", f"/models/{partition}/promote", {"model": "hoeffding_tree"}),
        ("GET", "/models", None),
    ]
    for method, path, body in asks:
        status, raw = call(w1.port, method, path, body, bearer(API_TOKEN))
        assert status in (200, 404), (method, path, status, raw)  # 404: no snapshot yet
        assert b"does not answer" not in raw and b"not contacted" not in raw, raw
    assert len(proxy.seen) >= len(asks), [s[:2] for s in proxy.seen]
    for method, path, headers, _ in proxy.seen:
        names = {k.lower() for k in headers}
        assert "authorization" not in names, (method, path, headers)
        assert API_TOKEN not in json.dumps(headers) and READ_TOKEN not in json.dumps(headers)
        assert {h.lower() for h in (peers.PEER_TIME, peers.PEER_NONCE, peers.PEER_SIGNATURE)} <= names
    # The owner: a captured request replayed, or altered, or a claim without a signature: 401.
    method, path, headers, body = next(s for s in proxy.seen if s[0] == "POST")
    replay = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
    status, raw = call(w2.port, method, path, body, replay)
    assert status == 401 and b"replayed" in raw, raw
    fresh = peers.sign_request(signer, method, path, body)
    status, raw = call(w2.port, method, path, body + b" ", {**fresh, "Content-Type": "application/json"})
    assert status == 401 and b"invalid signature" in raw, raw
    other = next(p for p in range(PARTITIONS) if p != partition)
    status, raw = call(w2.port, "GET", f"/models/{other}", None, fresh)
    assert status == 401, raw
    old = peers.sign_request(signer, "GET", "/models/local", b"", time.time() - 120)
    status, raw = call(w2.port, "GET", "/models/local", None, old)
    assert status == 401 and b"clock" in raw, raw
    status, raw = call(w2.port, "GET", "/models/local", None, {peers.LEGACY_FORWARDED: "1"})
    assert status == 401, raw
    wrong_key = peers.sign_request(
        Signer(Secret("another-key-" + "k" * 40), app=Settings.from_env(w2.env).app_id),
        "GET",
        "/models/local",
        b"",
    )
    status, raw = call(w2.port, "GET", "/models/local", None, wrong_key)
    assert status == 401 and b"invalid signature" in raw, raw
    # A valid fresh signature stands in for the token.
    good = peers.sign_request(signer, "GET", "/models/local", b"")
    status, raw = call(w2.port, "GET", "/models/local", None, good)
    assert status == 200, raw


def test_the_dashboard_page_may_run_its_own_script_only(tmp_path: Path) -> None:
    env = unique_env(1)
    with (
        running(env, tmp_path / "w1") as worker,
        urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/", timeout=10) as page,
    ):
        policy = page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("style-src")[0], policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy


def test_markup_from_a_worker_s_url_or_from_models_is_shown_as_text(tmp_path: Path) -> None:
    """A worker advertising a URL with markup: the other worker never contacts it (outside the
    peer pattern) and reports why; both dashboards show the URL as text, and no script runs.
    Then every string /models gives is replaced by markup (through the browser's own request
    routing): still only text."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (tools/install_chromium.sh)"
    env = unique_env(PARTITIONS, session_timeout="6", snapshot_every_events="200")
    w1 = Worker(env, tmp_path / "w1")
    evil = Worker({**env, "STREAMAPP_WEB_HOST": MARKUP}, tmp_path / "evil")
    producer = start_producer(env, events=3000, rate=300)
    errors: list[str] = []
    try:
        w1.start()
        evil.start()
        wait_for("both workers to serve partitions", lambda: spread(w1, evil), 90, evil.log_tail)
        doc = w1.get("/models")
        evil_url = next(url for url in doc["workers"] if "<img" in url)
        assert doc["workers"][evil_url]["ok"] is False
        assert "does not match STREAMAPP_PEER_URL_PATTERN: not contacted" in doc["workers"][evil_url]["error"]
        unavailable = [p for p in doc["partitions"] if p["status"] == "unavailable"]
        assert unavailable and all("not contacted" in p["reason"] for p in unavailable)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            for worker in (w1, evil):
                page = browser.new_page(bypass_csp=True)  # the page's own escaping, without its CSP
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"http://127.0.0.1:{worker.port}/")
                page.wait_for_function(
                    f"document.querySelectorAll('#partitions .card').length === {PARTITIONS}", timeout=30_000
                )
                page.wait_for_timeout(2_500)
                assert MARKUP in page.inner_text("body"), "the URL is shown, as text"
                assert page.evaluate("typeof window.__pwned") == "undefined"
                assert page.locator("img").count() == 0
                page.close()

            # Every string of /models replaced by markup, in the page's own poll.
            def poison(value: Any, key: str = "") -> Any:
                if isinstance(value, dict):
                    return {poison(k) if key == "workers" else k: poison(v, k) for k, v in value.items()}
                if isinstance(value, list):
                    return [poison(v, key) for v in value]
                if isinstance(value, str) and key != "status":
                    return f'{MARKUP}<script>window.__pwned=2</script>"><svg onload=window.__pwned=3>'
                return value

            real = w1.get("/models")
            poisoned = poison(real)
            for p in poisoned["partitions"]:
                p["metrics"] = {MARKUP: 0.5, **p.get("metrics", {})} if p["status"] == "served" else None
                if p["status"] == "served":
                    p["changes"] = [{"offset": 1, "request": MARKUP, "outcome": MARKUP}]
            page = browser.new_page(bypass_csp=True)  # the page's own escaping, without its CSP
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route(
                "**/models",
                lambda route: route.fulfill(
                    status=200, content_type="application/json", body=json.dumps(poisoned)
                ),
            )
            page.goto(f"http://127.0.0.1:{w1.port}/")
            page.wait_for_function(
                f"document.querySelectorAll('#partitions .card').length === {PARTITIONS}", timeout=30_000
            )
            page.wait_for_timeout(2_500)
            assert MARKUP in page.inner_text("body")
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert (
                page.locator("#partitions img, #partitions script, #workers img, #workers svg").count() == 0
            )
            browser.close()
    finally:
        producer.kill()
        producer.wait()
        w1.stop()
        evil.stop()
    assert all("__pwned" not in e for e in errors), errors


def test_the_dashboard_asks_for_the_read_token_and_sends_it(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium
    env = unique_env(2, read_token=READ_TOKEN, api_token=API_TOKEN)
    worker = Worker(env, tmp_path / "w1")
    try:
        worker.start()
        assert call(worker.port, "GET", "/")[0] == 200, "the page itself is open"
        assert call(worker.port, "GET", "/models")[0] == 401
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(bypass_csp=True)  # the page's own escaping, without its CSP
            page.goto(f"http://127.0.0.1:{worker.port}/")
            page.wait_for_selector("#auth:not([hidden])", timeout=15_000)
            assert "read token" in page.inner_text("#error")
            page.fill("#token", READ_TOKEN)
            page.click("#auth button")
            page.wait_for_function(
                "document.querySelectorAll('#partitions .card').length === 2", timeout=30_000
            )
            assert page.evaluate("sessionStorage.getItem('streamapp.readToken')") == READ_TOKEN
            assert page.is_hidden("#auth")
            browser.close()
    finally:
        worker.stop()
