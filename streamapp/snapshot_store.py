"""Where a partition's snapshots live: kept slots in a key-value table, verified on every read.

The worker's table is Faust's RocksDB-backed snapshot table (its changelog is the durable copy);
unit tests use a dict (`MemoryTable`), the same interface. The store signs what it saves and
verifies what it reads, restores the newest usable snapshot of a partition, and hands a rollback
the snapshot it names; the partition core never sees bytes or keys.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from streamapp import models, snapshot
from streamapp.models import ModelSpec
from streamapp.ownership import Ownership
from streamapp.partition import PartitionConfig, PartitionState, Unavailable
from streamapp.settings import Settings
from streamapp.signing import Signer

log = logging.getLogger(__name__)


class SnapshotTable(Protocol):
    """A key-value table of snapshot bytes, written in the partition's own changelog partition."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, partition: int, key: str, blob: bytes) -> None: ...


class MemoryTable(dict[str, bytes]):
    """The in-memory twin of the worker's snapshot table."""

    def put(self, partition: int, key: str, blob: bytes) -> None:
        self[key] = blob


def snapshot_key(partition: int, seq: int, kept: int) -> str:
    """Snapshots of a partition take turns in `kept` slots: the newest valid one is recovered
    from, and the others are what a rollback can return to."""
    return f"p{partition}/{seq % kept}"


class SnapshotStore:
    """The kept snapshots of every partition, and the states they hold."""

    def __init__(
        self,
        table: SnapshotTable,
        signer: Signer,
        kept: int,
        max_bytes: int,
        specs: Sequence[ModelSpec],
        config: PartitionConfig,
        every: tuple[int, float],
    ) -> None:
        self.table = table
        #: a snapshot after about this many events or seconds (Ownership.snapshot_due)
        self.every_events, self.every_seconds = every
        self.signer = signer
        self.kept = kept
        self.max_bytes = max_bytes
        self.specs = tuple(specs)  # the champion first, then the challengers
        self.config = config
        #: packages of configured model factories, whose classes a snapshot may hold
        self.packages = snapshot.factory_packages([s.name for s in specs])
        #: verified headers of each partition's kept snapshots, by table key: listings and the
        #: rollback check read these instead of the values (up to 64 MiB each)
        self.headers: dict[int, dict[str, snapshot.Header]] = {}
        #: snapshots refused (unsigned, forged, another partition's, a forbidden global) by
        #: partition, since this worker started
        self.refused: dict[int, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, table: SnapshotTable) -> SnapshotStore:
        """Resolving the models here makes a bad STREAMAPP_MODEL (or a missing
        STREAMAPP_SIGNING_KEY) fail at start, with what to set."""
        spec = models.resolve(settings.model, settings.task)
        specs = (spec, *models.resolve_challengers(settings.challengers, spec))
        every = (settings.snapshot_every_events, settings.snapshot_every_seconds)
        config = PartitionConfig.from_settings(settings)
        kept, max_bytes = settings.snapshots_kept, settings.max_snapshot_bytes
        return cls(table, Signer.from_settings(settings), kept, max_bytes, specs, config, every)

    def forget(self, partitions: set[int]) -> None:
        """Keep the header caches of `partitions` only: the next owner of the others writes them."""
        for partition in set(self.headers) - partitions:
            del self.headers[partition]

    def _refuse(self, partition: int, which: str, exc: snapshot.SnapshotError) -> None:
        """Log and count a snapshot that is not trusted; recovery and rollback pass over it."""
        self.refused[partition] = self.refused.get(partition, 0) + 1
        log.error("partition %d: SNAPSHOT REFUSED (%s): %s", partition, which, exc)

    def kept_snapshots(self, partition: int) -> list[tuple[snapshot.Header, bytes]]:
        """The partition's kept snapshots whose signature verifies for it, newest first.

        Reads every value (up to 64 MiB each): for recovery and downloads; listings use
        kept_headers. Refreshes the header cache; the refused ones are logged and counted.
        """
        found = []
        for slot in range(self.kept):
            key = snapshot_key(partition, slot, self.kept)
            blob = self.table.get(key)
            if blob is None:
                continue
            try:
                found.append((key, snapshot.verify(blob, self.signer, partition), blob))
            except snapshot.SnapshotError as exc:
                self._refuse(partition, f"slot {key}", exc)
        found.sort(key=lambda found: -found[1].seq)
        self.headers[partition] = {key: header for key, header, _ in found}
        return [(header, blob) for _, header, blob in found]

    def kept_headers(self, partition: int) -> list[snapshot.Header]:
        """The headers of the partition's verified kept snapshots, newest first, from memory
        (read once from the table, then kept up to date by this worker's own writes)."""
        if partition not in self.headers:
            self.kept_snapshots(partition)
        return sorted(self.headers[partition].values(), key=lambda header: -header.seq)

    def load(self, partition: int, blob: bytes) -> tuple[snapshot.Header, PartitionState]:
        """A kept snapshot of `partition` as a state fitted to the configured models; raises
        SnapshotError (SnapshotRefused when it is not trusted: nothing of it was unpickled)."""
        header, state = snapshot.decode(blob, self.signer, partition, self.packages)
        state.runtime = Ownership.restored(header.seq, header.offset, len(blob), header.created)
        state.configure(self.config, self.specs)
        return header, state

    def fresh(self, partition: int) -> PartitionState:
        """A new model for the partition, as configured."""
        return PartitionState(partition, self.specs[0], self.config, self.specs[1:])

    def restore(self, partition: int, before: int | None = None) -> PartitionState | None:
        """The newest kept snapshot that verifies and decodes (an older one when the newest is
        damaged or refused: replay from its offset is just as exact); None: start a new model.
        `before`: only snapshots of offsets below it (an audit rebuilding a past decision)."""
        configured = {s.name for s in self.specs}
        for header, blob in self.kept_snapshots(partition):
            if before is not None and header.offset >= before:
                continue
            if not configured & set(header.models):
                log.error(
                    "partition %d: snapshot #%d holds models %s, none of them configured "
                    "(STREAMAPP_MODEL, STREAMAPP_CHALLENGERS); starting a new model",
                    partition,
                    header.seq,
                    header.models,
                )
                return None
            try:
                _, state = self.load(partition, blob)
            except snapshot.SnapshotRefused as exc:
                self._refuse(partition, f"#{header.seq}", exc)
                continue
            except snapshot.SnapshotError as exc:
                log.error("partition %d: SNAPSHOT #%d UNUSABLE: %s", partition, header.seq, exc)
                continue
            log.info(
                "partition %d: restored snapshot #%d at offset %d (%d bytes, %d events learned)",
                partition,
                header.seq,
                header.offset,
                len(blob),
                state.events_learned,
            )
            return state
        return None

    def rollback_source(self, partition: int, seq: int) -> PartitionState:
        """The state of kept snapshot #`seq`, for a rollback; Unavailable says why not."""
        kept = sorted(header.seq for header in self.kept_headers(partition))
        slot = next((k for k, h in self.headers[partition].items() if h.seq == seq), None)
        blob = None if slot is None else self.table.get(slot)
        if blob is None:
            raise Unavailable(f"snapshot #{seq} is not kept (kept: {kept or 'none'})")
        try:
            header, older = self.load(partition, blob)
            if header.seq != seq:
                raise snapshot.SnapshotError(f"its slot {slot} now holds snapshot #{header.seq}")
        except snapshot.SnapshotError as exc:
            if isinstance(exc, snapshot.SnapshotRefused):
                self._refuse(partition, f"#{seq}, rollback", exc)
            raise Unavailable(f"snapshot #{seq} unusable: {exc}") from exc
        return older

    def due(self, state: PartitionState, now: float) -> bool:
        return state.runtime.snapshot_due(state.partition, self.every_events, self.every_seconds, now)

    def take(self, state: PartitionState, now: float) -> int | None:
        """Write the partition's state now, on the event loop (STREAMAPP_SNAPSHOT_IN=loop; the
        worker's default is a child: streamapp/snapshot_writer.py), and note it in its
        ownership; its size, or None when it could not be made or written: counted and logged,
        never raised, as the model keeps learning in memory and recovery replays from the last
        good snapshot."""
        state.runtime.snapshot_started(now)
        try:
            blob = snapshot.encode(state, self.max_bytes, self.signer)
            self.write(state.partition, blob)
        except Exception as exc:  # a SnapshotError (too large), a model that cannot pickle, Faust
            self.not_written(state, exc)
            return None
        state.runtime.snapshot_taken(state.offset, len(blob))
        return len(blob)

    def not_written(self, state: PartitionState, exc: BaseException) -> None:
        """Count and log a snapshot that could not be made or written. (Seen: Faust's table
        raised PartitionsMismatch while the consumer's metadata of a changelog created a moment
        before still listed no partitions.)"""
        state.runtime.snapshot_failed()
        log.error("partition %d: SNAPSHOT NOT WRITTEN: %s: %s", state.partition, type(exc).__name__, exc)

    def rewound(self, state: PartitionState, offset: int) -> tuple[PartitionState, str]:
        """The state to replay from after `state` failed half-way through learning `offset`: its
        newest snapshot, else a new model from the first offset it ever applied; positioned,
        replaying silently up to `offset`, the model error counted. Its source: 'snapshot' or 'new'."""
        restored, source = self.restore(state.partition), "snapshot"
        if restored is None:
            restored, source = self.fresh(state.partition), "new"
            restored.offset = state.first_offset - 1
            restored.first_offset = state.first_offset
        restored.runtime.positioned = True
        restored.runtime.replay_until = max(state.runtime.replay_until, offset)
        restored.model_errors = state.model_errors + 1
        return restored, source

    def write(self, partition: int, blob: bytes) -> snapshot.Header:
        """Store an encoded snapshot of `partition` (this worker's own) in the slot its sequence
        number names; its header. Raises what the table raises."""
        header = snapshot.read_header(blob)
        key = snapshot_key(partition, header.seq, self.kept)
        self.table.put(partition, key, blob)
        headers = self.headers.get(partition)
        if headers is not None:  # else the first listing reads the table, this one included
            headers[key] = header
        return header
