"""Fuzz every endpoint of the published OpenAPI document against a real two-worker cluster.

Schemathesis generates requests from `GET /openapi.json` (valid and invalid ones) and sends them
to both workers in turn, so requests for a partition the other worker owns go through the signed
worker-to-worker path. Every answer must be documented (status, content type, schema), none may
be a 5xx, and each must come within a time bound. A second test calls every endpoint without a
token, with the read token and with the API token, and checks the status the document promises.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.chaos import Cluster
from tests.integration.cluster import Worker, unique_env, wait_for

PARTITIONS = 4
READ_TOKEN = "fuzz-read-token-0123456789abcdef"
API_TOKEN = "fuzz-api-token-0123456789abcdefg"
#: examples per operation and generation mode (Schemathesis's negative mode also sends requests
#: without the token, which must be 401): 14 operations x 2 modes x 100 ~ 2,000 requests
EXAMPLES = 100
#: seconds any answer may take (a forwarded change waits for its owner to apply it: well below)
MAX_RESPONSE_SECONDS = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = unique_env(
        PARTITIONS,
        api_token=API_TOKEN,
        read_token=READ_TOKEN,
        challengers="naive_bayes",
        snapshot_every_events="100",
        session_timeout="6",
    )
    asyncio.run(produce(Settings.from_env(env), "card", rate=0, limit=800, progress=False))
    c = Cluster(env, tmp_path_factory.mktemp("fuzz"))
    try:
        c.start("w1")
        c.start("w2")
        wait_for("two workers serving every partition", lambda: spread(c), 120, c.logs)
        yield c
    finally:
        c.stop_all()


def spread(c: Cluster) -> bool:
    served = c.served()
    owners = {w.datadir.name for _, w in served.values()}
    return (
        len(served) == PARTITIONS
        and owners == {"w1", "w2"}
        and all(s["events_seen"] > 0 for s, _ in served.values())
        and all((w.get("/ready") or {}).get("ready") for w in c.workers.values())
    )


def call(
    worker: Worker, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_every_endpoint_fuzzed_from_the_openapi_document(cluster: Cluster) -> None:
    workers = list(cluster.workers.values())
    cluster_models = cluster.workers["w1"].get("/openapi.json")
    assert cluster_models["openapi"].startswith("3.")
    # The tokens as Schemathesis's own auth: its negative mode then knows when it left one out.
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"apiToken": {"bearer": API_TOKEN}, "readToken": {"bearer": READ_TOKEN}}}}
    )
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{workers[0].port}/openapi.json", config=config)
    bases = itertools.cycle(f"http://127.0.0.1:{w.port}" for w in workers)
    checks: list[CheckFunction] = [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
        missing_required_header,
        unsupported_method,
    ]
    seen: Counter[str] = Counter()
    slowest = 0.0
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    documented = {f"{m.upper()} {path}" for path, ops in cluster_models["paths"].items() for m in ops}
    # Schemathesis leaves out the document's own path; every other operation is fuzzed.
    assert labels == documented - {"GET /openapi.json"}, labels
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                nonlocal slowest
                t0 = time.monotonic()
                response = case.call(base_url=next(bases), timeout=MAX_RESPONSE_SECONDS + 30)
                elapsed = time.monotonic() - t0
                slowest = max(slowest, elapsed)
                seen[f"{case.method} {response.status_code}"] += 1
                assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
                assert elapsed < MAX_RESPONSE_SECONDS, (case.method, case.formatted_path, elapsed)
                if response.status_code >= 400:
                    assert "error" in json.loads(response.content), response.text[:300]
                if case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE:
                    case.validate_response(response, checks=checks)
                else:
                    case.validate_response(
                        response,
                        checks=[status_code_conformance, content_type_conformance, negative_data_rejection],
                    )

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameter, no body)
    total = sum(seen.values())
    took = time.monotonic() - started
    print(f"\nfuzzed {total} requests in {took:.0f} s, slowest answer {slowest:.2f} s: {dict(seen)}")
    assert total >= 15 * 10
    for worker in workers:
        assert worker.alive()
        assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.log_tail()


#: (method, path, body) of one valid request per operation; {p} is a partition
EXAMPLE_REQUESTS = {
    ("get", "/"): None,
    ("get", "/health"): None,
    ("get", "/ready"): None,
    ("get", "/metrics"): None,
    ("get", "/openapi.json"): None,
    ("get", "/models"): None,
    ("get", "/models/local"): None,
    ("get", "/models/{partition}"): None,
    ("get", "/models/{partition}/snapshots"): None,
    ("get", "/models/{partition}/snapshot"): None,
    ("get", "/models/{partition}/explain"): None,
    ("post", "/models/{partition}/promote"): {"model": "hoeffding_tree"},
    ("post", "/models/{partition}/rollback"): {"seq": 999},
    ("post", "/promote"): {"model": "hoeffding_tree"},
    ("post", "/models/{partition}/predict"): {"x": [{"amount": 1.0}]},
    ("post", "/predict"): {"key": "card-00001", "x": {"amount": 1.0}},
}


def test_every_endpoint_answers_with_and_without_tokens_as_documented(cluster: Cluster) -> None:
    w1 = cluster.workers["w1"]
    doc = w1.get("/openapi.json")
    documented = {(m, path): op for path, ops in doc["paths"].items() for m, op in ops.items()}
    assert set(documented) == set(EXAMPLE_REQUESTS), "one example request per documented operation"
    schemes = doc["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}
    for (method, path), body in EXAMPLE_REQUESTS.items():
        op = documented[(method, path)]
        access = op["x-streamapp-access"]
        for partition in range(PARTITIONS):  # partitions of both workers: local and forwarded
            concrete = path.format(partition=partition)
            answers = {
                who: call(w1, method.upper(), concrete, body, token)
                for who, token in (
                    ("none", None),
                    ("wrong", "x" * 32),
                    ("read", READ_TOKEN),
                    ("api", API_TOKEN),
                )
            }
            for who, (status, headers, raw) in answers.items():
                assert status < 500, (method, concrete, who, raw)
                assert str(status) in op["responses"], (method, concrete, who, status, raw)
                if status >= 400:
                    assert headers["Content-Type"].startswith("application/json")
                    assert json.loads(raw)["error"]
                if status == 401:
                    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
            refused = {who for who, (status, _, _) in answers.items() if status in (401, 403)}
            expected = {"open": set(), "read": {"none", "wrong"}, "change": {"none", "wrong", "read"}}[access]
            assert refused == expected, (method, concrete, {w: a[0] for w, a in answers.items()})
            if access == "open" and path != "/promote":
                break  # one partition is enough for paths without one
            if "{partition}" not in path:
                break
        expected_security = {
            "open": [],
            "read": [{"readToken": []}, {"apiToken": []}],
            "change": [{"apiToken": []}],
        }[access]
        assert op["security"] == expected_security, (method, path)


def raw_request(worker: Worker, request: bytes) -> tuple[int, dict[str, Any]]:
    """Bytes no HTTP client library would send: the status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", worker.port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),  # a malformed request line
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\nConnection: close\r\n\r\n", 400),
        (
            b"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
            401,
        ),
        (
            b"GET /models/%C2%B2 HTTP/1.1\r\nHost: x\r\nAUTH\r\nConnection: close\r\n\r\n",
            404,
        ),  # a Unicode digit
        (b"GET /models/%C2%B2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401),  # the token first
        (b"GET /router/something HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),  # Faust's own view
        (b"DELETE /models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nAUTH\r\nContent-Length: 3000000\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n\r\n" + b" " * 3_000_000,
            413,
        ),
    ],
)
def test_requests_no_client_library_sends_get_a_json_4xx(
    cluster: Cluster, request_bytes: bytes, status: int
) -> None:
    worker = cluster.workers["w1"]
    got, body = raw_request(
        worker, request_bytes.replace(b"AUTH", f"Authorization: Bearer {READ_TOKEN}".encode())
    )
    assert got == status and isinstance(body.get("error"), str), (got, body)
    assert worker.alive()
