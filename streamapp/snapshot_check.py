"""`streamapp snapshots check`: can this version of streamapp use the snapshots that the running
one wrote, and what does an upgrade to it cost?

River's pickles do not carry across its releases, and a worker refuses a snapshot written by
another River version (or signed with another key, or holding none of the configured models): an
upgrade then restarts that partition's model from the retained log. Run with the new version's
image and the deployment's settings, the check reads the snapshot changelog topic and the source
topic's offsets (nothing is written), and says, partition by partition, which snapshot a worker of
this version would restore and how many events it would replay, and whether the log still holds
them all (else the model would not be the one the running version has).

Exit status: 0 every partition keeps its newest snapshot (a rolling update is enough); 1 some
partition would replay from an older snapshot or from the start of its log, every event of it still
retained (exact, but as slow as that replay: consider the blue/green upgrade of
docs/runbooks/upgrade.md); 2 some partition would lose events that retention deleted (its models
would differ from the running ones: blue/green, and compare before switching).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition

from streamapp import kafka_security, snapshot
from streamapp.application import source_filter
from streamapp.replay import changelog_table, read_partition, snapshot_changelog
from streamapp.settings import Settings
from streamapp.snapshot_store import SnapshotStore, snapshot_key

KEEPS, REPLAYS, LOSES = 0, 1, 2  # exit statuses, worst last


@dataclass(frozen=True)
class Kept:
    """One kept snapshot of a partition, and whether this version can restore it."""

    seq: int
    offset: int
    river: str
    refused: str | None  # why not; None: it loads


@dataclass(frozen=True)
class Verdict:
    """What a worker of this version would do with one partition."""

    partition: int
    kept: tuple[Kept, ...]  # newest first
    log_start: int  # the first offset the source topic still holds
    log_end: int

    @property
    def restored(self) -> Kept | None:
        """The snapshot a worker restores: the newest that loads (as SnapshotStore.restore)."""
        return next((k for k in self.kept if k.refused is None), None)

    @property
    def replay_from(self) -> int:
        restored = self.restored
        return 0 if restored is None else restored.offset + 1

    @property
    def events_to_replay(self) -> int:
        return max(0, self.log_end - self.replay_from)

    @property
    def status(self) -> int:
        if self.replay_from < self.log_start:
            return LOSES
        if self.kept and self.restored is not self.kept[0]:
            return REPLAYS
        return KEEPS

    def describe(self) -> str:
        restored = self.restored
        if not self.kept:
            told = "no snapshot"
        elif restored is None:
            told = "no snapshot this version can use: a new model"
        else:
            told = f"restores #{restored.seq} (offset {restored.offset})"
        refused = "; ".join(f"#{k.seq} refused: {k.refused}" for k in self.kept if k.refused)
        lost = self.log_start - self.replay_from if self.status == LOSES else 0
        end = (
            f", but retention deleted {lost} of them (offsets {self.replay_from}-{self.log_start - 1})"
            if lost
            else ""
        )
        return (
            f"partition {self.partition}: {told}, then replays {self.events_to_replay} events from offset "
            f"{self.replay_from}{end}" + (f" [{refused}]" if refused else "")
        )

    def as_dict(self) -> dict[str, Any]:
        restored = self.restored
        return {
            "partition": self.partition,
            "status": ("keeps", "replays", "loses")[self.status],
            "restores": None if restored is None else restored.seq,
            "replay_from": self.replay_from,
            "events_to_replay": self.events_to_replay,
            "log_start": self.log_start,
            "log_end": self.log_end,
            "kept": [k.__dict__ for k in self.kept],
        }


def kept_of(store: SnapshotStore, partition: int) -> tuple[Kept, ...]:
    """Every kept snapshot of the partition in the table, newest first, each tried as a worker
    of this version would: signature, River version, allowlist, the configured models."""
    configured = {spec.name for spec in store.specs}
    found = []
    for slot in range(store.kept):
        blob = store.table.get(snapshot_key(partition, slot, store.kept))
        if blob is None:
            continue
        try:
            header, _ = store.load(partition, blob)
        except snapshot.SnapshotError as exc:
            found.append(claimed(blob, str(exc)))
            continue
        unused = None if configured & set(header.models) else "none of them configured"
        refused = unused and f"holds models {header.models}, {unused}"
        found.append(Kept(header.seq, header.offset, header.river, refused))
    return tuple(sorted(found, key=lambda kept: -kept.seq))


def claimed(blob: bytes, refused: str) -> Kept:
    """A refused snapshot as its header claims to be, for the listing: anyone may have written
    it, so a claim that is not a number reads as -1 (and sorts as the oldest)."""
    try:
        header = snapshot.read_header(blob)
    except snapshot.SnapshotError:
        return Kept(-1, -1, "?", refused)

    def number(value: object) -> int:
        return value if type(value) is int else -1

    return Kept(number(header.seq), number(header.offset), str(header.river)[:40], refused)


async def source_offsets(settings: Settings) -> dict[int, tuple[int, int]]:
    """{partition: (first offset held, end offset)} of the topic the models' offsets count in."""
    async with kafka_security.consumer(settings) as consumer:
        is_source = source_filter(settings)
        topics = [topic for topic in await consumer.topics() if is_source(topic)]
        if len(topics) != 1:
            raise SystemExit(
                f"streamapp snapshots check: the source topic of {settings.app_id!r} is not on the "
                f"broker (found {sorted(topics)}): check STREAMAPP_APP_ID and STREAMAPP_BROKER"
            )
        tps = [TopicPartition(topics[0], p) for p in range(settings.partitions)]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: (starts[tp], ends[tp]) for tp in tps}


async def check(settings: Settings) -> list[Verdict]:
    changelog = snapshot_changelog(settings)
    offsets = await source_offsets(settings)
    verdicts = []
    for partition in range(settings.partitions):
        table = changelog_table(await read_partition(settings, changelog, partition))
        store = SnapshotStore.from_settings(settings, table)
        start, end = offsets[partition]
        verdicts.append(Verdict(partition, kept_of(store, partition), start, end))
    return verdicts


def summary(verdicts: Sequence[Verdict]) -> str:
    worst = max((v.status for v in verdicts), default=KEEPS)
    replay = sum(v.events_to_replay for v in verdicts)
    return (
        "every partition keeps its newest snapshot: a rolling update keeps every model",
        f"some partitions restart from an older snapshot or a new model; {replay} events to replay, "
        "all retained (exact): a rolling update replays them, a blue/green upgrade hides the wait",
        f"retention deleted events some partitions would need ({replay} events to replay): their "
        "models would differ from the running ones; upgrade blue/green and compare before switching",
    )[worst]


def run(settings: Settings, as_json: bool) -> int:
    verdicts = asyncio.run(check(settings))
    if as_json:
        for verdict in verdicts:
            print(orjson.dumps(verdict.as_dict()).decode())
    else:
        for verdict in verdicts:
            print(verdict.describe())
        print(summary(verdicts))
    return max((v.status for v in verdicts), default=KEEPS)
