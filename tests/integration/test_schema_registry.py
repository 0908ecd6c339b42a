"""The real registry's Confluent-compatible API, through plain HTTP: what streamapp's client relies on.

Apicurio Registry 2.6 (tools/registry/registry.sh). Where it differs from Confluent's registry, the
assertion says so: its responses are application/json unless the request's Accept names Confluent's
type; ``GET /schemas/ids/{id}`` adds ``"references": []``; the schema text comes back as registered
(Confluent returns its own canonical string); the error messages are Apicurio's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.integration.registry import subject_prefix

SR_JSON = "application/vnd.schemaregistry.v1+json"

EVENT_V1 = {
    "type": "record",
    "name": "Event",
    "namespace": "streamapp.test",
    "fields": [{"name": "entity", "type": "string"}, {"name": "value", "type": "double"}],
}
# BACKWARD-compatible: a reader of v2 reads v1's data (the new field is optional, with a default).
EVENT_V2 = {
    **EVENT_V1,
    "fields": [*EVENT_V1["fields"], {"name": "source", "type": ["null", "string"], "default": None}],
}
# Not BACKWARD-compatible: a reader of v3 finds no value for "count" in v1's or v2's data.
EVENT_V3 = {**EVENT_V2, "fields": [*EVENT_V2["fields"], {"name": "count", "type": "long"}]}


def text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"))


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any


def call(
    method: str, url: str, body: Any = None, *, content_type: str = SR_JSON, accept: str | None = None
) -> Reply:
    headers = {"Content-Type": content_type} if body is not None else {}
    if accept is not None:
        headers["Accept"] = accept
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, response.headers.get_content_type(), json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers.get_content_type(), json.loads(error.read()))


def register(base: str, subject: str, schema: dict[str, Any]) -> Reply:
    return call("POST", f"{base}/subjects/{subject}/versions", {"schema": text(schema)})


def test_register_then_get_by_id(schema_registry: str) -> None:
    subject = f"{subject_prefix('register')}-value"
    first = register(schema_registry, subject, EVENT_V1)
    # Exactly {"id": N}, as Confluent's register answers (no subject, version or schema in it).
    assert first.status == 200, first
    assert list(first.body) == ["id"] and isinstance(first.body["id"], int), first.body
    assert first.content_type == "application/json"  # Confluent: application/vnd.schemaregistry.v1+json
    schema_id = first.body["id"]

    # The same text again: the same id and no new version.
    assert register(schema_registry, subject, EVENT_V1).body == {"id": schema_id}
    assert call("GET", f"{schema_registry}/subjects/{subject}/versions").body == [1]

    by_id = call("GET", f"{schema_registry}/schemas/ids/{schema_id}")
    assert by_id.status == 200, by_id
    # The text as registered; no "schemaType" for Avro (as Confluent); "references" even when empty.
    assert by_id.body == {"schema": text(EVENT_V1), "references": []}

    # An id names a schema, not a subject's version: the same text under another subject has its id.
    other = register(schema_registry, f"{subject_prefix('register')}-value", EVENT_V1)
    assert other.body == {"id": schema_id}


def test_backward_evolution_accepted_incompatible_refused(schema_registry: str) -> None:
    # registry.sh sets Confluent's default (Apicurio's own is NONE, which would accept v3 below).
    config = call("GET", f"{schema_registry}/config")
    assert config.body == {"compatibilityLevel": "BACKWARD"}, "the registry's global compatibility"

    subject = f"{subject_prefix('evolve')}-value"
    v1 = register(schema_registry, subject, EVENT_V1).body["id"]
    evolved = register(schema_registry, subject, EVENT_V2)
    assert evolved.status == 200, evolved
    assert list(evolved.body) == ["id"] and evolved.body["id"] != v1
    v2 = evolved.body["id"]

    latest = call("GET", f"{schema_registry}/subjects/{subject}/versions/latest")
    assert latest.body == {
        "id": v2,
        "subject": subject,
        "version": 2,
        "schema": text(EVENT_V2),
        "references": [],
    }

    # A new required field: refused with 409 and SR error code 409, as Confluent.
    refused = register(schema_registry, subject, EVENT_V3)
    assert refused.status == 409, refused
    assert refused.body["error_code"] == 409
    assert "Incompatible" in refused.body["message"]  # Apicurio's words, not Confluent's
    assert call("GET", f"{schema_registry}/subjects/{subject}/versions").body == [1, 2]

    # The compatibility check says so without registering (Apicurio adds "reason": null).
    latest_url = f"{schema_registry}/compatibility/subjects/{subject}/versions/latest"
    check = call("POST", latest_url, {"schema": text(EVENT_V3)})
    assert check.status == 200 and check.body["is_compatible"] is False, check
    assert call("POST", latest_url, {"schema": text(EVENT_V2)}).body["is_compatible"] is True


def test_unknown_and_invalid_answered_with_confluent_error_codes(schema_registry: str) -> None:
    unknown_id = call("GET", f"{schema_registry}/schemas/ids/{2**31 - 1}")
    assert unknown_id.status == 404, unknown_id
    assert unknown_id.body["error_code"] == 40403  # schema not found

    subject = f"{subject_prefix('errors')}-value"
    unknown_subject = call("GET", f"{schema_registry}/subjects/{subject}/versions/latest")
    assert (unknown_subject.status, unknown_subject.body["error_code"]) == (404, 40401)

    register(schema_registry, subject, EVENT_V1)
    unknown_version = call("GET", f"{schema_registry}/subjects/{subject}/versions/7")
    assert (unknown_version.status, unknown_version.body["error_code"]) == (404, 40402)

    bad = {"type": "record", "name": "Bad", "fields": [{"name": "x", "type": "no-such-type"}]}
    invalid = register(schema_registry, subject, bad)
    assert (invalid.status, invalid.body["error_code"]) == (422, 42201)  # invalid schema


def test_content_types(schema_registry: str) -> None:
    prefix = subject_prefix("types")
    for i, content_type in enumerate([SR_JSON, "application/vnd.schemaregistry+json", "application/json"]):
        reply = call(
            "POST",
            f"{schema_registry}/subjects/{prefix}-{i}-value/versions",
            {"schema": text(EVENT_V1)},
            content_type=content_type,
        )
        assert reply.status == 200, (content_type, reply)
    # Confluent's content type in the answer only when the request's Accept asks for it.
    schema_id = reply.body["id"]
    asked = call("GET", f"{schema_registry}/schemas/ids/{schema_id}", accept=SR_JSON)
    assert (asked.status, asked.content_type) == (200, SR_JSON)
    assert call("GET", f"{schema_registry}/schemas/ids/{schema_id}").content_type == "application/json"
