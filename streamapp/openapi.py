"""The HTTP API as one table: what each endpoint takes, answers and needs, and its OpenAPI 3 form.

The table is the single source of truth: the web layer refuses any route that is not in it (so
Faust's own views can never be served by accident), takes each request's access level from it,
and serves the OpenAPI document built from it at `GET /openapi.json`, which the fuzz tests read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamapp.access import CHANGE, OPEN, READ
from streamapp.settings import Settings

#: most feature sets one `POST /models/{partition}/predict` scores (see docs/web-api.md)
MAX_PROBES = 1000
#: largest request body the workers read (aiohttp's client_max_size): larger ones get 413
MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
ERROR = "Error"


@dataclass(frozen=True, slots=True)
class Answer:
    description: str
    schema: str | None = ERROR  # a name in components/schemas; None: no body described
    media: str = JSON
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    method: str  # lower case, as OpenAPI writes it
    path: str  # aiohttp's canonical form: /models/{partition}
    access: str  # access.OPEN | READ | CHANGE
    summary: str
    responses: Mapping[int, Answer]
    parameters: tuple[str, ...] = ()  # names in PARAMETERS
    body: str | None = None  # a name in components/schemas
    description: str = ""
    operation_id: str = field(default="")


UNKNOWN_PARTITION = Answer("No such partition (not a number of 0..partitions-1).")
NO_OWNER = Answer("The partition's owner does not answer, may not be contacted, or the group rebalances.")
BAD_BODY = Answer("The body is not what the endpoint takes (the reason says what).")
NO_READ = Answer("The read token is required and missing or wrong.", headers=("WWW-Authenticate",))
NO_API = Answer("The API token is missing or wrong.", headers=("WWW-Authenticate",))
BAD_QUERY = Answer("A query parameter the endpoint does not take, or a malformed one.")
TOO_LARGE = Answer(f"The body is over {MAX_BODY_BYTES} bytes.")
#: the answers of a change (promote, rollback) written as a control event into a partition's log
APPLIED = Answer("Written into the partition's log and applied.", "Change")
NOT_YET_APPLIED = Answer("Written, not applied within 30 s.", "Change")
CHANGES_OFF = Answer("No STREAMAPP_API_TOKEN is configured: changes are off.")
REFUSED = Answer("Refused when applied (the outcome says why).", "Change")

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/", OPEN, "The live dashboard (one self-contained HTML page)",
              {200: Answer("The page; it asks for the read token when /models needs one.",
                           "Text", "text/html")},
              operation_id="dashboard"),
    Operation("get", "/health", OPEN, "Liveness: the process answers",
              {200: Answer("Alive.", "Health")}, operation_id="health"),
    Operation("get", "/ready", OPEN, "Readiness: joined the group and recovered its partitions",
              {200: Answer("Ready.", "Ready"),
               503: Answer("Not ready yet; the reason is in `state`.", "Ready")},
              operation_id="ready"),
    Operation("get", "/metrics", OPEN, "Prometheus metrics (text exposition format)",
              {200: Answer("The metrics.", "Text", "text/plain")}, operation_id="metrics"),
    Operation("get", "/openapi.json", OPEN, "This document",
              {200: Answer("The OpenAPI document.", "Document")}, operation_id="openapi"),
    Operation("get", "/models", READ, "Every partition of the cluster, with its owner",
              {200: Answer("Every partition; unknown ones are `unavailable` with the reason.", "Cluster"),
               401: NO_READ},
              operation_id="models"),
    Operation("get", "/models/local", READ, "The partitions this worker serves",
              {200: Answer("This worker's partitions.", "Local"),
               401: NO_READ},
              operation_id="models_local"),
    Operation("get", "/models/{partition}", READ, "One partition in detail, with the model's parameters",
              {200: Answer("The partition.", "Partition"),
               401: NO_READ,
               404: UNKNOWN_PARTITION, 503: NO_OWNER},
              ("partition",), operation_id="model"),
    Operation("get", "/models/{partition}/snapshots", READ, "The partition's kept snapshots (headers only)",
              {200: Answer("What a rollback can return to, newest first.", "Snapshots"),
               401: NO_READ,
               404: UNKNOWN_PARTITION, 503: NO_OWNER},
              ("partition",), operation_id="snapshots"),
    Operation("get", "/models/{partition}/snapshot", CHANGE, "Download a kept snapshot as written",
              {200: Answer("The snapshot's bytes (the newest, or `seq`).",
                           "Binary", "application/octet-stream"),
               400: Answer("`seq` is not a snapshot number."),
               401: NO_API,
               403: Answer("No STREAMAPP_API_TOKEN is configured: downloads are off."),
               404: Answer("No such partition, or it keeps no such snapshot."), 503: NO_OWNER},
              ("partition", "seq"), operation_id="snapshot"),
    Operation("get", "/models/{partition}/explain", CHANGE,
              "Reproduce and explain a past decision, as `streamapp replay` does",
              {200: Answer("The replayed decision, its prediction records, whether they are equal, and why.",
                           "Explanation"),
               400: Answer("`offset` is missing or not a number."),
               401: NO_API,
               403: Answer("No STREAMAPP_API_TOKEN is configured: explanations are off."),
               404: Answer("No such partition, or no such offset in its log."),
               422: Answer("The offset holds no scored event, or its replay is not possible (or not "
                           "within the bounds of this view)."),
               429: Answer("This worker is explaining another decision.", headers=("Retry-After",)),
               503: NO_OWNER},
              ("partition", "offset"), operation_id="explain"),
    Operation("post", "/models/{partition}/promote", CHANGE,
              "Make another of the partition's models the champion",
              {200: APPLIED,
               202: NOT_YET_APPLIED,
               400: BAD_BODY,
               401: NO_API,
               403: CHANGES_OFF,
               404: Answer("No such partition, or the partition has no such model."),
               409: REFUSED,
               413: TOO_LARGE, 503: NO_OWNER},
              ("partition",), "Promote", operation_id="promote"),
    Operation("post", "/models/{partition}/rollback", CHANGE,
              "Return the partition's models to a kept snapshot",
              {200: APPLIED,
               202: NOT_YET_APPLIED,
               400: BAD_BODY,
               401: NO_API,
               403: CHANGES_OFF,
               404: Answer("No such partition, or it keeps no such snapshot."),
               409: REFUSED,
               413: TOO_LARGE,
               429: Answer("The partition was rolled back less than STREAMAPP_ROLLBACK_MIN_INTERVAL ago.",
                           headers=("Retry-After",)),
               503: NO_OWNER},
              ("partition",), "Rollback", operation_id="rollback"),
    Operation("post", "/promote", CHANGE, "Promote a model on every partition, through each owner",
              {200: Answer("Every partition promoted it (or it already was champion).", "Everywhere"),
               202: Answer("Written everywhere, not applied everywhere within 30 s.", "Everywhere"),
               207: Answer("A mix of outcomes: see each partition's `status`.", "Everywhere"),
               400: BAD_BODY,
               401: NO_API,
               403: CHANGES_OFF,
               404: Answer("No partition has the model (each partition's answer is in `partitions`).",
                           "EverywhereError"),
               409: Answer("Every partition refused it (each partition's answer is in `partitions`).",
                           "EverywhereError"),
               413: TOO_LARGE,
               503: Answer("Some partitions have no owner, or no owner answered.", "EverywhereError")},
              body="Promote", operation_id="promote_everywhere"),
    Operation("post", "/models/{partition}/predict", READ, "Score feature sets with one partition's champion",
              {200: Answer("One prediction per feature set, and the model version.", "Predictions"),
               400: BAD_BODY,
               401: NO_READ,
               404: UNKNOWN_PARTITION, 413: TOO_LARGE,
               422: Answer("The model cannot score these features (the reason is the model's)."),
               503: NO_OWNER},
              ("partition",), "Probes", operation_id="predict_partition"),
    Operation("post", "/predict", READ, "Score one event by key, with its partition's champion",
              {200: Answer("The prediction, the partition, its owner and the model version.", "Prediction"),
               400: BAD_BODY,
               401: NO_READ,
               413: TOO_LARGE,
               422: Answer("The model cannot score these features (the reason is the model's)."),
               503: NO_OWNER},
              body="Event", operation_id="predict"),
)  # fmt: skip

#: the query parameters of the table (the others are path parameters); any other is refused
QUERY_PARAMETERS = frozenset({"seq", "offset"})
_BY_ROUTE = {(op.method, op.path): op for op in OPERATIONS}
PATHS = frozenset(op.path for op in OPERATIONS)


def operation(method: str, path: str) -> Operation | None:
    """The table's entry for a request (HEAD is GET without a body), or None."""
    method = method.lower()
    return _BY_ROUTE.get(("get" if method == "head" else method, path))


def unknown_query(op: Operation, names: list[str]) -> str | None:
    """Why a request's query is refused (a parameter the operation does not take, or one given
    twice), or None."""
    known = QUERY_PARAMETERS.intersection(op.parameters)
    for name in names:
        if name not in known:
            return f"unknown query parameter {name!r} (this endpoint takes: {sorted(known) or 'none'})"
        if names.count(name) > 1:
            return f"query parameter {name!r} given more than once"
    return None


def allowed_methods(path: str) -> list[str]:
    methods = sorted({op.method.upper() for op in OPERATIONS if op.path == path})
    return [*methods, "HEAD"] if "GET" in methods else methods


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
SNAPSHOT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 999_999_999}


def _object(required: Sequence[str], **properties: Any) -> dict[str, Any]:
    """An object schema with these required fields and, when given, these properties."""
    schema: dict[str, Any] = {"type": "object", "required": list(required)}
    if properties:
        schema["properties"] = properties
    return schema


def _array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


_VERSION = _object(["name"], name=STRING, snapshot_seq=INTEGER)
_EACH_PARTITION = _array(_object(["partition", "status"], partition=INTEGER, status=INTEGER))
_CLUSTER_PARTITION = _object(
    ["partition", "status"],
    partition=INTEGER,
    status={"enum": ["served", "unavailable"]},
    owner={"type": "string", "nullable": True},
    reason=STRING,
)
# The schemas that do not depend on the settings, split where the settings' ones go (Features,
# Promote), so that the document keeps its order.
_SCHEMAS_BEFORE: dict[str, Any] = {
    ERROR: _object(["error"], error={"type": "string", "description": "Why the request was refused."}),
    "Text": STRING,
    "Binary": {"type": "string", "format": "binary"},
    "Document": OBJECT,
    "Health": _object(["status"], status={"enum": ["ok"]}),
    "Ready": _object(
        ["ready", "state", "partitions"], ready=BOOLEAN, state=STRING, partitions=_array(INTEGER)
    ),
    "Local": _object(
        ["worker", "ready", "state", "partitions"],
        worker=STRING,
        ready=BOOLEAN,
        state=STRING,
        partitions=_array(_object(["partition"])),
    ),
    "Cluster": _object(
        ["worker", "time", "workers", "partitions"],
        worker=STRING,
        time={"type": "number"},
        workers={"type": "object", "additionalProperties": _object(["ok"])},
        partitions=_array(_CLUSTER_PARTITION),
    ),
    "Partition": _object(
        ["partition", "worker", "model", "parameters", "memory_bytes"],
        partition=INTEGER,
        worker=STRING,
        model=STRING,
        parameters=OBJECT,
        memory_bytes=INTEGER,
    ),
    "Snapshots": _object(
        ["partition", "snapshots"], partition=INTEGER, snapshots=_array(_object(["seq", "offset"]))
    ),
    "Explanation": _object(
        ["partition", "offset", "rebuilt_from", "replayed", "recorded", "copies", "equal", "differences"],
        partition=INTEGER,
        offset=INTEGER,
        rebuilt_from=STRING,
        replayed=OBJECT,
        recorded={"type": "object", "nullable": True},
        copies=INTEGER,
        equal=BOOLEAN,
        differences=_array(STRING),
        explanation=_object(["kind"], kind=STRING),
    ),
    "Change": _object(
        ["partition", "offset", "outcome"], partition=INTEGER, offset=INTEGER, outcome=STRING, model=_VERSION
    ),
    "Everywhere": _object(["partitions"], partitions=_EACH_PARTITION),
    "EverywhereError": _object(["error"], error=STRING, partitions=_EACH_PARTITION),
}
_SCHEMAS_AFTER: dict[str, Any] = {
    "Rollback": _object(["seq"], seq=SNAPSHOT_NUMBER),
    "Probes": _object(["x"], x={"type": "array", "maxItems": MAX_PROBES, "items": _ref("Features")}),
    "Event": _object(
        ["key", "x"],
        key={"type": "string", "description": "The key the producers use."},
        x=_ref("Features"),
    ),
    "Predictions": _object(["predictions", "model"], predictions=_array(OBJECT), model=_VERSION),
    "Prediction": _object(
        ["key", "partition", "prediction", "model"],
        key=STRING,
        partition=INTEGER,
        owner={"type": "string", "nullable": True},
        prediction=OBJECT,
        model=_VERSION,
    ),
}


def _schemas(settings: Settings) -> dict[str, Any]:
    """Every schema; Features and Promote carry the settings' bounds."""
    number = {"type": "number", "minimum": -settings.max_abs_number, "maximum": settings.max_abs_number}
    text = {"type": "string", "maxLength": settings.max_name_length}
    features = {
        "type": "object",
        "description": f"Feature name (up to {settings.max_name_length} characters) to value.",
        "maxProperties": settings.max_features,
        "additionalProperties": {"anyOf": [number, text, BOOLEAN]},
    }
    promote = _object(["model"], model={**text, "minLength": 1, "description": "A model of the partition."})
    return {**_SCHEMAS_BEFORE, "Features": features, "Promote": promote, **_SCHEMAS_AFTER}


_HEADERS = {
    "WWW-Authenticate": {"schema": STRING, "description": "Bearer."},
    "Retry-After": {"schema": INTEGER, "description": "Seconds to wait."},
}
_SEQ = {
    "name": "seq",
    "in": "query",
    "required": False,
    "description": "A kept snapshot's number; without it, the newest.",
    "schema": SNAPSHOT_NUMBER,
}
_OFFSET = {
    "name": "offset",
    "in": "query",
    "required": True,
    "description": "The offset of a scored event in the partition's log.",
    "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
}
_SECURITY_SCHEMES = {
    "readToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "STREAMAPP_READ_TOKEN: scoring and model internals.",
    },
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "STREAMAPP_API_TOKEN: changes, snapshot downloads, explanations (and reads).",
    },
}


def _security(level: str, settings: Settings) -> list[dict[str, list[str]]]:
    if level == CHANGE:
        return [{"apiToken": []}]
    if level == READ and settings.read_token:
        return [{"readToken": []}, {"apiToken": []}]
    return []


def _response(answer: Answer) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.schema:
        described["content"] = {answer.media: {"schema": _ref(answer.schema)}}
    if answer.headers:
        described["headers"] = {name: _HEADERS[name] for name in answer.headers}
    return described


def _operation(op: Operation, settings: Settings) -> dict[str, Any]:
    """One operation's entry; every operation may answer 400 for a query it does not take."""
    partition = {
        "name": "partition",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": settings.partitions - 1},
    }
    entry: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "security": _security(op.access, settings),
        "x-streamapp-access": op.access,
        "responses": {
            str(status): _response(answer)
            for status, answer in sorted({400: BAD_QUERY, **op.responses}.items())
        },
    }
    if op.parameters:
        named = {"partition": partition, "seq": _SEQ, "offset": _OFFSET}
        entry["parameters"] = [named[name] for name in op.parameters]
    if op.body:
        entry["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(op.body)}}}
    return entry


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a worker with these settings (bounds, which tokens are on)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, settings)
    read = "open on this cluster (no STREAMAPP_READ_TOKEN)" if not settings.read_token else "required"
    description = (
        "Every worker answers for the whole cluster and forwards a partition's requests to "
        "its owner, signed with the workers' key (never with the client's token). Every 4xx "
        'and 5xx answer is JSON: {"error": reason}. Read token: '
        f"{read}; the API token is accepted wherever the read token is."
    )
    return {
        "openapi": "3.0.3",
        "info": {"title": "streamapp", "version": "1", "description": description},
        "paths": paths,
        "components": {"schemas": _schemas(settings), "securitySchemes": _SECURITY_SCHEMES},
    }
