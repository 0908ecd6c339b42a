"""Snapshot codec: a partition state as one atomic, signed bytes value, with a readable header.

Layout (format 3): MAGIC, a 4-byte big-endian header length, a JSON header, a 32-byte
HMAC-SHA256, then the pickled state. The header carries the source offset the state contains,
so recovery can compare snapshots and decide where to resume without unpickling a model of many
megabytes.

Pickles are not trusted input: anyone who can write the changelog topic could place a value
there, and unpickling runs code. So two walls stand between a value and `pickle`:

1. The signature. The MAC (STREAMAPP_SIGNING_KEY, purpose `signing.SNAPSHOT`) covers the magic,
   the header bytes and the payload, and is checked before anything is unpickled; the signed
   header names the partition, and a snapshot is only restored into that partition. A value
   that does not verify (forged, corrupt, another key's, another partition's, or the unsigned
   format 1) is refused with `SnapshotRefused`.
2. A restricted unpickler. Even a signed payload may only reference the globals a partition
   state holds: classes defined in River, in the modules of streamapp that make up a state
   (ALLOWED_MODULES), or in the package of a configured model factory, and a short list of exact stdlib and
   numpy names (ALLOWED_GLOBALS). Anything else is refused before it is looked up.
"""

from __future__ import annotations

import io
import pickle
import platform
import struct
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import river

from streamapp import signing, snapshot_migration
from streamapp.partition import PartitionState

MAGIC = b"STREAMAPP-SNAP\x03"
FORMAT = 3
#: format 2 pickled the whole state object of an older layout: migrated when loaded
FORMAT_2_MAGIC = b"STREAMAPP-SNAP\x02"
#: format 1 carried a SHA-256 digest that anyone can recompute: refused, never unpickled
UNSIGNED_MAGIC = b"STREAMAPP-SNAP\x01"
_LENGTH = struct.Struct(">I")
MAC_BYTES = 32

#: Globals outside the allowed modules that partition states hold, found by pickling the state
#: of every preset (tests/unit/test_snapshot.py). Each builds data; none runs anything it is given.
ALLOWED_GLOBALS = frozenset(
    {
        # plain data types: defaultdict factories, Counter keys, sets of seen categories
        *(
            ("builtins", name)
            for name in (
                "bool",
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "set",
                "str",
                "tuple",
            )
        ),
        ("collections", "Counter"),
        ("collections", "OrderedDict"),  # the events waiting for labels
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("functools", "partial"),  # GaussianNB's nested defaultdict factory
        ("numbers", "Number"),  # compose.SelectType(numbers.Number) in the presets' pipelines
        ("random", "Random"),  # the seeded generators of trees and forests
        ("river.naive_bayes.gaussian", "GaussianNB._make_gaussian"),  # the one function referenced
        # numpy arrays and scalars, for River estimators outside the presets (custom factories)
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)
#: modules whose classes a state may hold (and their submodules)
ALLOWED_MODULES = (
    "river",
    "streamapp.partition",
    "streamapp.contenders",
    "streamapp.drift",
    "streamapp.metrics",
    "streamapp.tasks",
    "streamapp.schema",
    "streamapp.waiting",
)
#: parts of River that read or write files or the network, or run evaluations: never in a state
DENIED_MODULES = ("river.datasets", "river.stream", "river.checks", "river.evaluate", "river.api")


class SnapshotError(Exception):
    """A snapshot cannot be written or read; the message says why and what to change."""


class SnapshotRefused(SnapshotError):
    """A snapshot that is not trusted: unsigned, not verified by the keys, another partition's,
    or referencing a global outside the allowlist. Nothing of it was unpickled."""


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
    models: list[str]  # every contender, the champion first


def factory_packages(models: Iterable[str]) -> tuple[str, ...]:
    """The packages of configured model factories ('package.module:factory'), whose classes a
    state holds; presets add none."""
    packages = set()
    for name in models:
        module, colon, _ = name.partition(":")
        if colon:
            packages.add(module.rpartition(".")[0] or module)
    return tuple(sorted(packages))


def _within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals, and never by walking from one module into another:
    a name is looked up in its module's own namespace (no import, no module __getattr__), and
    the object found must say it was defined there under that name."""

    def __init__(
        self, file: io.BytesIO, packages: tuple[str, ...] = (), replaced: Mapping[tuple[str, str], type] = {}
    ) -> None:
        super().__init__(file)
        self.modules = ALLOWED_MODULES + packages
        self.replaced = replaced  # globals of an older format, and their stand-ins

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.replaced:
            return self.replaced[module, name]
        exact = (module, name) in ALLOWED_GLOBALS
        if not exact and (not _within(module, self.modules) or _within(module, DENIED_MODULES)):
            raise SnapshotRefused(f"snapshot references the global {module}.{name}, which is not allowed")
        found = sys.modules.get(module)
        if found is None:
            raise SnapshotRefused(f"snapshot references {module}.{name}, but {module} is not loaded")
        obj: Any = found
        for part in name.split("."):
            # A module's or class's own namespace: no attribute hooks, nothing inherited.
            obj = vars(obj).get(part) if isinstance(obj, type) or obj is found else None
            if isinstance(obj, staticmethod):
                obj = obj.__func__
        if not (
            getattr(obj, "__module__", None) == module
            and getattr(obj, "__qualname__", None) == name
            and (exact or (isinstance(obj, type) and not issubclass(obj, type)))
        ):
            raise SnapshotRefused(f"snapshot references the global {module}.{name}, which is not allowed")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise SnapshotRefused("snapshot holds a persistent reference, which is not allowed")


def encode(state: PartitionState, max_bytes: int, signer: signing.Signer) -> bytes:
    """Pickle `state` behind a signed header; raises SnapshotError if the result would exceed
    max_bytes."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = {
        "format": FORMAT,
        "partition": state.partition,
        "offset": state.offset,
        "seq": state.runtime.snapshot_seq + 1,
        "created": time.time(),
        "model": state.champion.name,
        "river": river.__version__,
        "python": platform.python_version(),
        "payload_bytes": len(payload),
        "models": [state.champion.name, *(n for n in state.names() if n != state.champion.name)],
    }
    head = orjson.dumps(header)
    mac = signer.sign(signing.SNAPSHOT, MAGIC, head, payload)
    blob = b"".join((MAGIC, _LENGTH.pack(len(head)), head, mac, payload))
    if len(blob) > max_bytes:
        raise SnapshotError(
            f"snapshot of partition {state.partition} is {len(blob)} bytes, over the limit of "
            f"{max_bytes} (STREAMAPP_MAX_SNAPSHOT_BYTES); raise it together with "
            "STREAMAPP_KAFKA_MAX_MESSAGE_BYTES, or choose a smaller model"
        )
    return blob


def _unsigned(blob: bytes) -> SnapshotRefused:
    """The refusal of a format 1 snapshot, naming its sequence number when its header reads."""
    start = len(UNSIGNED_MAGIC) + _LENGTH.size
    seq = "?"
    try:
        (length,) = _LENGTH.unpack_from(blob, len(UNSIGNED_MAGIC))
        seq = str(orjson.loads(blob[start : start + length])["seq"])
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return SnapshotRefused(
        f"snapshot #{seq} is in the unsigned format 1, which streamapp no longer loads (its digest "
        "is no signature); the partition is recovered from an older signed snapshot or its log"
    )


def _split(blob: bytes) -> tuple[Header, bytes, memoryview, bytes, memoryview]:
    """Header (as claimed, unverified), magic, header bytes, MAC and payload; JSON is all it
    parses."""
    if blob.startswith(UNSIGNED_MAGIC):
        raise _unsigned(blob)
    magic = next((m for m in (MAGIC, FORMAT_2_MAGIC) if blob.startswith(m)), None)
    if magic is None:
        raise SnapshotRefused("not a streamapp snapshot (bad magic)")
    start = len(magic) + _LENGTH.size
    if len(blob) < start:
        raise SnapshotRefused("truncated snapshot header")
    (length,) = _LENGTH.unpack_from(blob, len(magic))
    view = memoryview(blob)
    head = view[start : start + length]
    mac = bytes(view[start + length : start + length + MAC_BYTES])
    if len(mac) != MAC_BYTES:
        raise SnapshotRefused("truncated snapshot header")
    try:
        fields: dict[str, Any] = orjson.loads(head)
        header = Header(**fields)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise SnapshotRefused(f"unreadable snapshot header: {exc}") from exc
    if header.format != magic[-1]:
        raise SnapshotRefused(f"snapshot format {header.format} is not the supported {FORMAT} (or 2)")
    return header, magic, head, mac, view[start + length + MAC_BYTES :]


def read_header(blob: bytes) -> Header:
    """The header as written, NOT verified and without unpickling: for a snapshot this worker
    has just encoded itself. Anything read from the table goes through `verify`."""
    return _split(blob)[0]


def _verified(blob: bytes, signer: signing.Signer, partition: int) -> tuple[Header, memoryview]:
    header, magic, head, mac, payload = _split(blob)
    if not signer.verify(mac, signing.SNAPSHOT, magic, head, payload):
        raise SnapshotRefused(
            f"snapshot #{header.seq} (as its header claims) has a signature that "
            "STREAMAPP_SIGNING_KEY (and STREAMAPP_SIGNING_KEY_PREVIOUS) does not verify: "
            "forged, corrupt, or written by workers with another key"
        )
    if header.partition != partition:
        raise SnapshotRefused(
            f"snapshot #{header.seq} belongs to partition {header.partition}, not {partition}: "
            "a snapshot is only restored into the partition it was taken of"
        )
    if len(payload) != header.payload_bytes:  # signed, so only a bug writes this
        raise SnapshotError(
            f"snapshot #{header.seq} has {len(payload)} payload bytes, not {header.payload_bytes}"
        )
    return header, payload


def verify(blob: bytes, signer: signing.Signer, partition: int) -> Header:
    """The header of a snapshot signed with an accepted key for `partition`; raises
    SnapshotRefused otherwise. Reads the header and hashes the payload, unpickles nothing."""
    return _verified(blob, signer, partition)[0]


def decode(
    blob: bytes, signer: signing.Signer, partition: int, packages: tuple[str, ...] = ()
) -> tuple[Header, PartitionState]:
    """Header and state of a snapshot of `partition`: the signature is checked first, then the
    payload is unpickled with only the allowed globals (`packages`: see factory_packages)."""
    header, payload = _verified(blob, signer, partition)
    if header.river != river.__version__:
        raise SnapshotError(
            f"snapshot #{header.seq} was written by River {header.river}, this worker runs "
            f"{river.__version__}: pickles do not carry across River versions"
        )
    old = header.format == 2
    replaced = snapshot_migration.FORMAT_2_GLOBALS if old else {}
    try:
        state = RestrictedUnpickler(io.BytesIO(payload), packages, replaced).load()
        if old:
            state = snapshot_migration.from_format_2(state)
    except SnapshotError:
        raise
    except Exception as exc:  # a signed payload that still does not load: a bug, not an attack
        raise SnapshotError(f"snapshot #{header.seq} does not unpickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, PartitionState) or state.partition != partition:
        raise SnapshotError(f"snapshot #{header.seq} does not hold partition {partition}'s state")
    return header, state
