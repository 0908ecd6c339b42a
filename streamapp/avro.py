"""Avro in Confluent's wire format: a 0 byte, the writer schema's registry id (4 bytes, big
endian), then the Avro body. The body is read with the writer's own schema (fastavro), so every
version of a subject's schema reads without a restart; the mapping then picks the fields.

Nothing in a record is trusted: a wrong first byte, a schema id the registry does not know, a
body that does not decode, or bytes left over after it are each a reason for the dead-letter
topic. A writer schema that lets a few bytes expand without bound (an array or map of items
that take no bytes: null, empty records) is refused as a whole.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
from fastavro.types import Schema

from streamapp.records import BadEvent

MAGIC = 0
HEADER = struct.Struct(">bI")


def schema_id(raw: bytes) -> int:
    """The registry id of the schema `raw` was written with; BadEvent if it is not framed."""
    if len(raw) < HEADER.size:
        raise BadEvent(f"not Confluent's Avro wire format: {len(raw)} bytes, shorter than its 5-byte header")
    if raw[0] != MAGIC:
        raise BadEvent(
            f"not Confluent's Avro wire format: first byte 0x{raw[0]:02x}, not the magic byte 0x00 "
            "(is the topic JSON? STREAMAPP_INPUT_FORMAT)"
        )
    return int(HEADER.unpack_from(raw)[1])


def frame(schema: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema) + body


@dataclass(frozen=True)
class WriterSchema:
    """A registry schema ready to read with, or why it cannot be (every record naming it is
    dead-lettered with that reason)."""

    id: int
    parsed: Schema | None
    refused: str | None = None


def writer_schema(schema: int, text: str, schema_type: str = "AVRO") -> WriterSchema:
    """Parse the registry's schema `text` for id `schema`, refusing what cannot be read safely."""
    if schema_type.upper() != "AVRO":
        return WriterSchema(schema, None, f"schema id {schema} is a {schema_type} schema, not Avro")
    try:
        parsed = fastavro.parse_schema(orjson.loads(text))
    except Exception as exc:  # fastavro raises several kinds for a schema it cannot use
        return WriterSchema(schema, None, f"schema id {schema} is not a usable Avro schema: {exc}"[:300])
    unbounded = _zero_width_items(parsed)
    if unbounded:
        return WriterSchema(
            schema,
            None,
            f"schema id {schema} has {unbounded} of items that take no bytes: a record could "
            "expand without bound, so it is refused",
        )
    return WriterSchema(schema, parsed)


def decode(raw: bytes, writer: WriterSchema) -> Any:
    """The record in `raw` (framed, its id already read) as Python values."""
    if writer.parsed is None:
        raise BadEvent(writer.refused or f"schema id {writer.id} cannot be read")
    body = io.BytesIO(memoryview(raw)[HEADER.size :])
    try:
        record = fastavro.schemaless_reader(body, writer.parsed, None)
    except Exception as exc:  # bytes from anyone: whatever fastavro raises, it is the record's fault
        reason = f"Avro body does not decode with schema id {writer.id}: {type(exc).__name__}: {exc}"
        raise BadEvent(reason[:300]) from None
    left = len(raw) - HEADER.size - body.tell()
    if left:
        raise BadEvent(f"Avro body has {left} bytes left over after the record of schema id {writer.id}")
    return record


def _named(schema: Any, names: dict[str, Any]) -> dict[str, Any]:
    """Every named type (record, enum, fixed) of a parsed schema by its full name."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, names)
    elif isinstance(schema, dict):
        if "name" in schema and schema.get("type") in ("record", "error", "enum", "fixed"):
            if schema["name"] in names:
                return names
            names[schema["name"]] = schema
        for field in schema.get("fields", ()):
            _named(field["type"], names)
        for key in ("items", "values"):
            if key in schema:
                _named(schema[key], names)
    return names


def _zero_width_items(schema: Any) -> str | None:
    """'an array' or 'a map' if the parsed schema has one whose items can be written in no bytes."""
    names = _named(schema, {})
    containers = [s for s in _walk(schema, names, set()) if s.get("type") in ("array", "map")]
    for container in containers:
        items = container["items"] if container["type"] == "array" else container["values"]
        if _takes_no_bytes(items, names, set()):
            return "an array" if container["type"] == "array" else "a map"
    return None


def _walk(schema: Any, names: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """Every complex type in the schema, each named one once."""
    if isinstance(schema, str):
        if schema not in names or schema in seen:
            return []
        seen.add(schema)
        return _walk(names[schema], names, seen)
    if isinstance(schema, list):
        return [found for branch in schema for found in _walk(branch, names, seen)]
    if not isinstance(schema, dict):
        return []
    if "name" in schema:
        seen.add(schema["name"])
    found = [schema]
    for field in schema.get("fields", ()):
        found += _walk(field["type"], names, seen)
    for key in ("items", "values"):
        if key in schema:
            found += _walk(schema[key], names, seen)
    return found


def _takes_no_bytes(schema: Any, names: dict[str, Any], seen: set[str]) -> bool:
    if isinstance(schema, str):
        if schema == "null":
            return True
        if schema not in names or schema in seen:
            return False  # a primitive, or a recursive record (ended by a union: a byte)
        return _takes_no_bytes(names[schema], names, seen | {schema})
    if not isinstance(schema, dict):
        return False  # a union writes its branch index: a byte at least
    kind = schema.get("type")
    if kind == "null":
        return True
    if kind == "fixed":
        return int(schema.get("size", 1)) == 0
    if kind in ("record", "error"):
        inner = seen | {schema.get("name", "")}
        return all(_takes_no_bytes(f["type"], names, inner) for f in schema["fields"])
    return False
