"""A flood of unlabelled events: the waiting events stay within STREAMAPP_PENDING_LABELS_MAX_BYTES,
the worker's memory stays bounded, and a restart recovers instead of crash-looping."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson

from streamapp.settings import Settings
from tests.integration.cluster import Worker, end_offsets, send_raw, unique_env, wait_for

BOUND = 4 * 1024 * 1024  # bytes of waiting events per partition
EVENT_BYTES = 2000
BATCHES = 6
PER_BATCH = 6000  # 6 x 6,000 events of 2 KB: 72 MB offered, 18 times the bound


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def events(start: int, count: int) -> list[tuple[int, bytes, bytes]]:
    padding = "z" * (EVENT_BYTES - 120)
    return [
        (
            0,
            b"flood",
            orjson.dumps(
                {"id": f"e{i}", "x": {"amount": float(i % 97), "note": padding[:200], "pad": padding}}
            ),
        )
        for i in range(start, start + count)
    ]


def test_a_flood_of_unlabelled_events_is_bounded_in_memory(tmp_path: Path) -> None:
    env = unique_env(
        1,
        pending_labels_max="1000000",
        pending_labels_max_bytes=str(BOUND),
        max_name_length="4096",
        snapshot_every_events="3000",
        # RocksDB may hold up to its budget (64 MiB by default) of these 4 MB snapshots; a small
        # budget keeps what this test measures to the waiting events.
        rocksdb_memory_bytes=str(16 * 2**20),
    )
    settings = Settings.from_env(env)
    worker = Worker(env, tmp_path / "w1").start()
    try:
        assert worker.proc is not None
        samples = []
        for n in range(BATCHES):
            send_raw(settings.events_topic, events(n * PER_BATCH, PER_BATCH))
            worker.wait_caught_up(settings.events_topic, 1, timeout=120)
            state = worker.models()[0]
            samples.append((state["pending_labels"], state["pending_bytes"], rss_bytes(worker.proc.pid)))
        waiting = [bytes_ for _, bytes_, _ in samples]
        assert all(b <= BOUND for b in waiting), waiting
        assert worker.models()[0]["pending_evicted"] > 0
        rss = [r for _, _, r in samples]
        print(f"RSS after each batch of {PER_BATCH} events (MB): {[round(r / 2**20) for r in rss]}")
        # The bound holds the waiting events; RSS moves with RocksDB's memtables and the fetched
        # batches, but does not climb with the 72 MB offered (in memory, the events would be
        # several times that): once the bound has filled, RSS stays near the highest it was then.
        growth = rss[-1] - max(rss[1:3])
        assert growth < 3 * BOUND * 2, f"RSS grew {growth / 2**20:.0f} MB after the bound filled"
        assert all(r < 400 * 2**20 for _, _, r in samples)

        # A hard kill and a restart: recovery replays to the same bounded state, no crash loop.
        worker.stop(signal.SIGKILL)
        worker.start()
        end = end_offsets(settings.events_topic, 1)[0]
        wait_for(
            "the restarted worker to catch up",
            lambda: worker.models().get(0, {}).get("offset_applied") == end - 1,
            120,
            worker.log_tail,
        )
        assert worker.models()[0]["pending_bytes"] <= BOUND
        assert worker.alive()
    finally:
        worker.stop()
