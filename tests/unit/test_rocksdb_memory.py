"""Every RocksDB database of a worker shares one memory budget (streamapp/rocksdb_memory.py):
the memtables of many partitions stay near their share of it however much is written, where
databases of their own would each keep up to two full memtables; nothing written is lost."""

from __future__ import annotations

import os
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from streamapp import rocksdb_memory
from streamapp.rocksdb_memory import SharedMemoryOptions

MIB = 1024 * 1024
DATABASES = 16
TABLE = {"write_buffer_size": 4 * MIB, "max_write_buffer_number": 2}


def memtables_after_writing(options: rocksdict.Options, root: Path) -> int:
    """Bytes in the memtables of DATABASES databases after 24 rounds of 200 KB snapshots in
    three slots each (77 MB written), at their peak; every value reads back."""
    databases = [rocksdict.Rdict(str(root / f"p{i}"), options) for i in range(DATABASES)]
    written: dict[int, dict[bytes, bytes]] = {i: {} for i in range(DATABASES)}
    peak = 0
    for round_ in range(24):
        for i, db in enumerate(databases):
            key, value = f"slot-{round_ % 3}".encode(), os.urandom(200_000)
            db[key] = written[i][key] = value
        peak = max(
            peak, sum(db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0 for db in databases)
        )
    for i, db in enumerate(databases):
        assert {key: db[key] for key in written[i]} == written[i]
        db.close()
    return peak


def test_the_memtables_of_many_databases_stay_near_one_share_of_the_budget(tmp_path: Path) -> None:
    budget = 8 * MIB
    shared = memtables_after_writing(SharedMemoryOptions(budget, **TABLE).as_options(), tmp_path / "shared")
    alone = memtables_after_writing(
        RocksDBOptions(**TABLE, use_rocksdict=True).as_options(), tmp_path / "alone"
    )
    share = budget * rocksdb_memory.MEMTABLE_SHARE
    # Each database keeps a memtable of its own (an arena block, 512 KiB here, and the value
    # that started it), and flushes run in the background: the share plus that per database.
    # Measured: 20.5 MiB shared against 61 MiB for databases of their own.
    bound = share + DATABASES * 1.5 * MIB
    assert shared <= bound, f"{shared / MIB:.1f} MiB in memtables, over {bound / MIB:.0f}"
    assert alone > 2.5 * shared, f"databases of their own: {alone / MIB:.1f} MiB, shared: {shared / MIB:.1f}"
    _, buffers = rocksdb_memory.shared(budget)
    assert buffers.enabled() and buffers.get_buffer_size() == share


def test_one_budget_gives_one_cache_and_manager_per_process() -> None:
    assert rocksdb_memory.shared(3 * MIB) is rocksdb_memory.shared(3 * MIB)
