"""Snapshot codec: a partition state as one atomic bytes value, with a readable header.

Layout: MAGIC, a 4-byte big-endian header length, a JSON header, then the pickled state. The
header carries the source offset the state contains, so recovery can compare snapshots and
decide where to resume without unpickling a model of many megabytes; the payload digest
catches a truncated or corrupted value before pickle ever sees it.

Pickles are trusted input: only the changelog topic, which only workers write, feeds this codec.
Nothing that arrives over HTTP or on the events topic is ever unpickled.
"""

from __future__ import annotations

import hashlib
import pickle
import platform
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
import river

from streamapp.state import PartitionState

MAGIC = b"STREAMAPP-SNAP\x01"
FORMAT = 1
_LENGTH = struct.Struct(">I")


class SnapshotError(Exception):
    """A snapshot cannot be written or read; the message says why and what to change."""


@dataclass(frozen=True)
class Header:
    format: int
    partition: int
    offset: int
    seq: int
    created: float
    model: str
    river: str
    python: str
    payload_bytes: int
    payload_sha256: str
    models: list[str] | None = None  # every contender, the champion first; None before challengers


def encode(state: PartitionState, max_bytes: int) -> bytes:
    """Pickle `state` behind a header; raises SnapshotError if the result would exceed max_bytes."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = {
        "format": FORMAT,
        "partition": state.partition,
        "offset": state.offset,
        "seq": state.snapshot_seq + 1,
        "created": time.time(),
        "model": state.model_name,
        "river": river.__version__,
        "python": platform.python_version(),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "models": [state.model_name, *(n for n in state.names() if n != state.model_name)],
    }
    head = orjson.dumps(header)
    blob = b"".join((MAGIC, _LENGTH.pack(len(head)), head, payload))
    if len(blob) > max_bytes:
        raise SnapshotError(
            f"snapshot of partition {state.partition} is {len(blob)} bytes, over the limit of "
            f"{max_bytes} (STREAMAPP_MAX_SNAPSHOT_BYTES); raise it together with "
            "STREAMAPP_KAFKA_MAX_MESSAGE_BYTES, or choose a smaller model"
        )
    return blob


def read_header(blob: bytes) -> Header:
    """The header alone: cheap, no unpickling."""
    if not blob.startswith(MAGIC):
        raise SnapshotError("not a streamapp snapshot (bad magic)")
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start:
        raise SnapshotError("truncated snapshot header")
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    try:
        fields: dict[str, Any] = orjson.loads(blob[start : start + length])
        header = Header(**fields)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise SnapshotError(f"unreadable snapshot header: {exc}") from exc
    if header.format != FORMAT:
        raise SnapshotError(f"snapshot format {header.format} is not the supported {FORMAT}")
    return header


def decode(blob: bytes) -> tuple[Header, PartitionState]:
    """Header and state; checks length and digest before unpickling."""
    header = read_header(blob)
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    payload = memoryview(blob)[len(MAGIC) + _LENGTH.size + length :]
    if len(payload) != header.payload_bytes or hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise SnapshotError(f"snapshot of partition {header.partition} is corrupt (digest mismatch)")
    if header.river != river.__version__:
        raise SnapshotError(
            f"snapshot of partition {header.partition} was written by River {header.river}, this "
            f"worker runs {river.__version__}: pickles do not carry across River versions"
        )
    state = pickle.loads(payload)
    if not isinstance(state, PartitionState):
        raise SnapshotError(f"snapshot of partition {header.partition} holds {type(state).__name__}")
    return header, state
