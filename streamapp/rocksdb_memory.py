"""One RocksDB memory budget for the whole worker, however many partitions it holds.

Faust opens one RocksDB database per table partition, each with its own block cache and its own
memtables (RocksDBOptions.as_options builds a new Cache for every database). A worker holding
256 partitions then holds 256 caches and up to 256 x 2 memtables that fill as snapshots are
rewritten: its memory grows with the partitions and over time. Here every database of the worker
shares one block cache, and one write-buffer manager charges all memtables to that cache, so
RocksDB's memory stays near STREAMAPP_ROCKSDB_MEMORY, whatever the partition count: RocksDB
flushes the largest memtable when the budget is reached (writers never stall: the writes run on
the event loop).

Registered as the store `streamapp-rocksdb://`; the rest is Faust's RocksDB store.
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb

SCHEME = "streamapp-rocksdb"
#: memtables may take this share of the budget; the block cache holds what they leave
MEMTABLE_SHARE = 0.5

_shared: dict[int, tuple[rocksdict.Cache, rocksdict.WriteBufferManager]] = {}


def shared(budget: int) -> tuple[rocksdict.Cache, rocksdict.WriteBufferManager]:
    """The process's block cache and write-buffer manager for a budget of `budget` bytes."""
    if budget not in _shared:
        cache = rocksdict.Cache(budget)
        buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            int(budget * MEMTABLE_SHARE), False, cache
        )
        _shared[budget] = (cache, buffers)
    return _shared[budget]


class SharedMemoryOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options for one database, with the worker's shared cache and write buffers."""

    def __init__(self, memory_budget: int, **options: Any) -> None:
        super().__init__(**options)
        self.memory_budget = memory_budget

    def as_options(self) -> rocksdict.Options:
        cache, buffers = shared(self.memory_budget)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class SharedMemoryStore(faust_rocksdb.Store):
    """Faust's RocksDB store whose databases share the worker's memory budget (the table's
    `memory_budget` option, in bytes)."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
        budget = options.pop("memory_budget")
        super().__init__(*args, options={**options, "driver": "rocksdict"}, **kwargs)
        rest = dict(self.options or {})  # Faust took `driver` and `read_only` out
        self.rocksdb_options = SharedMemoryOptions(budget, **rest, use_rocksdict=True)


STORES.aliases[SCHEME] = f"{__name__}:SharedMemoryStore"
