"""A snapshot restores a partition exactly; an untrusted one is refused before pickle sees it,
and even a signed one may only build what a partition state holds."""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import pickletools
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import river
from river import datasets as river_datasets

from streamapp import datasets, models, producer, signing, snapshot
from streamapp.ownership import snapshot_spread
from streamapp.partition import Controlled, PartitionConfig, PartitionState
from streamapp.processor import Processor
from streamapp.records import Control
from streamapp.settings import Secret
from streamapp.signing import Signer
from streamapp.snapshot_store import MemoryTable, snapshot_key
from tests import TEST_SIGNING_KEY
from tests.processor_harness import Harness, build_processor
from tests.unit.test_partition import feed

SIGNER = Signer(Secret(TEST_SIGNING_KEY), app="streamapp")  # the default STREAMAPP_APP_ID
OTHER_KEY = "another-signing-key-0123456789abcdefghijkl"


def test_restored_state_continues_exactly_like_the_original() -> None:
    spec = models.resolve("adaptive_random_forest")
    msgs = list(producer.messages(datasets.load("card", limit=1500), label_delay=10))
    original = PartitionState(3, spec, PartitionConfig(pending_max=100))
    feed(original, msgs[:1000])
    blob = snapshot.encode(original, max_bytes=50_000_000, signer=SIGNER)
    header, restored = snapshot.decode(blob, SIGNER, 3)
    restored.configure(original.config, [spec])  # configuration is not pickled
    assert (header.partition, header.offset, header.seq) == (3, 999, 1)
    assert restored.waiting.events == original.waiting.events  # waiting events travel with the model
    tail_original = feed(original, msgs[1000:], start=1000)
    tail_restored = feed(restored, msgs[1000:], start=1000)
    assert tail_restored == tail_original
    assert restored.metrics.values() == original.metrics.values()


def test_header_is_readable_without_unpickling() -> None:
    state = PartitionState(1, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    feed(state, producer.messages(datasets.load("phishing", limit=10)))
    header = snapshot.read_header(snapshot.encode(state, max_bytes=10_000_000, signer=SIGNER))
    assert header.offset == 9
    assert header.model == "hoeffding_tree"
    assert header.payload_bytes > 0


def test_corrupt_and_foreign_values_are_refused() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    blob = snapshot.encode(state, max_bytes=10_000_000, signer=SIGNER)
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob[:-1] + bytes([blob[-1] ^ 1]), SIGNER, 0)  # tampered payload
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob[:-10], SIGNER, 0)
    with pytest.raises(snapshot.SnapshotRefused, match="bad magic"):
        snapshot.decode(b"\x80\x04pickle", SIGNER, 0)
    with pytest.raises(snapshot.SnapshotRefused, match="truncated"):
        snapshot.decode(snapshot.MAGIC + b"\x00\x00\x00\x02{}", SIGNER, 0)


def test_oversized_snapshot_is_a_clear_error() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    with pytest.raises(snapshot.SnapshotError, match=r"over the limit of 100 .*STREAMAPP_MAX_SNAPSHOT_BYTES"):
        snapshot.encode(state, max_bytes=100, signer=SIGNER)


def test_snapshot_schedule_by_count_and_by_age() -> None:
    state = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    assert not state.runtime.snapshot_due(
        state.partition, every_events=3, every_seconds=60, now=1000.0
    )  # nothing applied yet
    state.runtime.snapshot_started(now=1000.0)
    state.runtime.snapshot_taken(state.offset, 10)
    state.runtime.events_since_snapshot += 1
    assert not state.runtime.snapshot_due(state.partition, every_events=3, every_seconds=60, now=1001.0)
    assert state.runtime.snapshot_due(
        state.partition, every_events=3, every_seconds=60, now=1076.0
    )  # 60 s x 1.25 at most
    state.runtime.events_since_snapshot += 2
    assert state.runtime.snapshot_due(state.partition, every_events=3, every_seconds=60, now=1001.0)


def test_a_failed_snapshot_waits_an_interval_but_leaves_the_last_written_one_as_it_was() -> None:
    """The age of the last written snapshot, and what a crash replays, must not look fresh
    after an attempt that failed: that is when an operator needs them (StreamappSnapshotOverdue)."""
    runtime = PartitionState(0, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0)).runtime
    runtime.snapshot_started(now=1000.0)
    runtime.snapshot_taken(offset=9, size=10)
    runtime.events_since_snapshot += 5
    runtime.snapshot_started(now=1100.0)
    runtime.snapshot_failed()
    assert (runtime.snapshot_at, runtime.snapshot_offset, runtime.snapshot_errors) == (1000.0, 9, 1)
    runtime.events_since_snapshot += 5
    assert not runtime.snapshot_due(0, every_events=1000, every_seconds=60, now=1100.0 + 44)
    assert runtime.snapshot_due(0, every_events=1000, every_seconds=60, now=1100.0 + 76)
    runtime.snapshot_started(now=1200.0)
    runtime.snapshot_taken(offset=19, size=10)
    assert (runtime.snapshot_at, runtime.snapshot_offset) == (1200.0, 19)


def test_snapshot_intervals_are_spread_over_partitions_and_snapshots() -> None:
    """Partitions fed at one rate must not all snapshot in the same fetched batch."""
    factors = [snapshot_spread(p, seq) for p in range(64) for seq in range(20)]
    assert all(0.75 <= f < 1.25 for f in factors)
    assert sum(factors) / len(factors) == pytest.approx(1.0, abs=0.02)  # the mean interval holds
    first = sorted(snapshot_spread(p, 0) for p in range(8))
    assert min(b - a for a, b in itertools.pairwise(first)) > 0.03
    assert len({round(snapshot_spread(3, seq), 6) for seq in range(8)}) == 8


def processor_over(table: MemoryTable, **settings: str) -> Processor:
    """A processor whose snapshot table is `table` (only recovery and rollback are exercised)."""
    return build_processor(table, **settings)


def test_the_last_k_snapshots_are_kept_and_recovery_takes_the_newest_that_decodes() -> None:
    table = MemoryTable()
    processor = processor_over(table, snapshots_kept="3")
    state = processor.new_state(0)
    msgs = list(producer.messages(datasets.load("phishing", limit=500)))
    for n in range(5):  # five snapshots, 100 events apart: the last three are kept
        feed(state, msgs[n * 100 : (n + 1) * 100], start=n * 100)
        table[snapshot_key(0, state.runtime.snapshot_seq + 1, 3)] = blob = snapshot.encode(
            state, 10_000_000, SIGNER
        )
        state.runtime.snapshot_started(0.0)
        state.runtime.snapshot_taken(state.offset, len(blob))
    kept = processor.kept_snapshots(0)
    assert [(h.seq, h.offset) for h, _ in kept] == [(5, 499), (4, 399), (3, 299)]
    assert processor.kept_headers(0) == [h for h, _ in kept]

    processor.states.clear()
    restored, source = processor.state_for_recovery(0)
    assert (source, restored.offset, restored.runtime.snapshot_seq) == ("snapshot", 499, 5)

    newest = snapshot_key(0, 5, 3)
    table[newest] = table[newest][:-10] + b"0123456789"  # damaged: the one before it is used
    processor.states.clear()
    restored, source = processor.state_for_recovery(0)
    assert (source, restored.offset, restored.runtime.snapshot_seq) == ("snapshot", 399, 4)
    assert processor.store.refused == {0: 1}
    assert [h.seq for h in processor.kept_headers(0)] == [4, 3]  # what a rollback may still use


def header_fields(partition: int, offset: int, seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "format": snapshot.FORMAT,
        "partition": partition,
        "offset": offset,
        "seq": seq,
        "created": 0.0,
        "model": "hoeffding_tree",
        "river": river.__version__,
        "python": "3.11",
        "models": ["hoeffding_tree"],
        **extra,
    }


def signed(payload: bytes, partition: int, offset: int = 0, seq: int = 1, signer: Signer = SIGNER) -> bytes:
    """A format 2 snapshot around any payload, signed as a worker signs (or with another key)."""
    head = orjson.dumps(header_fields(partition, offset, seq, payload_bytes=len(payload)))
    mac = signer.sign(signing.SNAPSHOT, snapshot.MAGIC, head, payload)
    return snapshot.MAGIC + len(head).to_bytes(4, "big") + head + mac + payload


def unsigned(payload: bytes, partition: int, offset: int = 0, seq: int = 1) -> bytes:
    """A format 1 snapshot: a valid header and a correct SHA-256 digest, no signature."""
    digest = hashlib.sha256(payload).hexdigest()
    fields = header_fields(
        partition, offset, seq, format=1, payload_bytes=len(payload), payload_sha256=digest
    )
    head = orjson.dumps(fields)
    return snapshot.UNSIGNED_MAGIC + len(head).to_bytes(4, "big") + head + payload


class Touch:
    """Unpickled by plain pickle, it runs `touch path` (os.system in __reduce__)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def calling(module: str, name: str, *args: str) -> bytes:
    """A protocol 4 pickle that looks up module.name (STACK_GLOBAL) and calls it with `args`."""

    def text(value: str) -> bytes:
        data = value.encode()
        return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE

    return b"\x80\x04" + text(module) + text(name) + b"\x93(" + b"".join(map(text, args)) + b"tR."


def calling_by_global(module: str, name: str, arg: str) -> bytes:
    """The same with the protocol 0 GLOBAL opcode."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def state_of(partition: int = 0, events: int = 50) -> PartitionState:
    state = PartitionState(partition, models.resolve("hoeffding_tree"), PartitionConfig(pending_max=0))
    feed(state, producer.messages(datasets.load("phishing", limit=events)))
    return state


def test_a_tampered_header_or_payload_is_refused() -> None:
    blob = snapshot.encode(state_of(), 10_000_000, SIGNER)
    assert b'"offset":49,' in blob
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob.replace(b'"offset":49,', b'"offset":48,', 1), SIGNER, 0)
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.verify(blob.replace(b'"offset":49,', b'"offset":48,', 1), SIGNER, 0)
    middle = len(blob) - 500
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob[:middle] + bytes([blob[middle] ^ 0x20]) + blob[middle + 1 :], SIGNER, 0)


def test_a_snapshot_signed_with_another_key_is_refused_and_the_previous_key_still_verifies() -> None:
    old = Signer(Secret(OTHER_KEY), app="streamapp")
    blob = snapshot.encode(state_of(), 10_000_000, old)
    with pytest.raises(snapshot.SnapshotRefused, match="STREAMAPP_SIGNING_KEY"):
        snapshot.decode(blob, SIGNER, 0)
    rotating = Signer(
        Secret(TEST_SIGNING_KEY), previous=Secret(OTHER_KEY), app="streamapp"
    )  # ..._KEY_PREVIOUS
    header, state = snapshot.decode(blob, rotating, 0)
    assert header.offset == state.offset == 49
    # A worker signs with the new key only: the old key alone no longer verifies what it writes.
    with pytest.raises(snapshot.SnapshotRefused):
        snapshot.decode(snapshot.encode(state, 10_000_000, rotating), old, 0)


def test_another_partitions_snapshot_is_refused_in_this_partitions_slot() -> None:
    blob = snapshot.encode(state_of(partition=3), 10_000_000, SIGNER)
    assert snapshot.decode(blob, SIGNER, 3)[0].partition == 3
    with pytest.raises(snapshot.SnapshotRefused, match="belongs to partition 3, not 5"):
        snapshot.decode(blob, SIGNER, 5)
    table = {snapshot_key(5, 1, 3): blob}  # a copy of partition 3's snapshot in partition 5's slot
    processor = processor_over(table)
    state, source = processor.state_for_recovery(5)
    assert (source, state.partition, state.offset) == ("new", 5, -1)
    assert processor.store.refused == {5: 1}
    assert processor.kept_headers(5) == []


def test_an_old_format_snapshot_is_refused_and_recovery_replays_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = state_of()
    blob = unsigned(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 0, state.offset, seq=4)
    with pytest.raises(snapshot.SnapshotRefused, match="snapshot #4 is in the unsigned format 1"):
        snapshot.decode(blob, SIGNER, 0)
    processor = processor_over({snapshot_key(0, 4, 3): blob})
    restored, source = processor.state_for_recovery(0)
    assert (source, restored.offset) == ("new", -1)
    assert processor.store.refused == {0: 1}
    assert "partition 0: SNAPSHOT REFUSED (slot p0/1): snapshot #4 is in the unsigned format 1" in caplog.text
    assert TEST_SIGNING_KEY not in caplog.text


def test_a_signed_pickle_of_a_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Touch(marker), protocol=pickle.HIGHEST_PROTOCOL)
    for blob in (
        signed(payload, 0),
        unsigned(payload, 0),
        signed(payload, 0, signer=Signer(Secret(OTHER_KEY))),
    ):
        with pytest.raises(snapshot.SnapshotRefused):
            snapshot.decode(blob, SIGNER, 0)
        assert not marker.exists()
    with pytest.raises(snapshot.SnapshotRefused, match=r"global posix\.system"):
        snapshot.decode(signed(payload, 0), SIGNER, 0)
    # The payload is live: plain pickle runs it (in a child process, as an attacked worker would).
    subprocess.run(
        ["python3", "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"], input=payload
    )
    assert marker.exists()


FORBIDDEN = [
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "run"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("builtins", "type"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),
    ("functools", "reduce"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("importlib", "import_module"),
    ("numpy", "load"),
    ("pickle", "loads"),
    ("river.compose.pipeline", "inspect"),  # river.<module>.<another module>
    ("river.compose.pipeline", "inspect.os"),
    ("river.compose.pipeline", "inspect.os.system"),
    ("river.compose.pipeline", "io.open"),
    ("river.compose.pipeline", "functools.partial"),  # allowed as functools.partial, not through river
    ("river.compose.pipeline", "Pipeline.__init__"),
    ("river.compose.pipeline", "Pipeline.__init__.__globals__"),
    ("river.compose.pipeline", "Pipeline.__class__"),
    ("river.compose", "Pipeline"),  # re-exported: defined in river.compose.pipeline
    ("river.datasets.base", "os"),
    ("river.datasets.base", "RemoteDataset"),  # downloads
    ("river.stream.cache", "Cache"),  # reads and deletes files
    ("river.utils", "pandas"),
    ("river", "__loader__"),
    ("river.naive_bayes.gaussian", "GaussianNB._make_gaussian.__globals__"),
    ("streamapp.partition", "time"),
    ("streamapp.partition", "log"),
    ("streamapp.snapshot", "pickle"),
    ("streamapp.consumer", "BatchApp"),  # a Faust app: not part of a state
    ("streamapp.cli", "main"),
    ("abc", "ABCMeta"),
    ("__main__", "anything"),
]


@pytest.mark.parametrize(("module", "name"), FORBIDDEN, ids=[f"{m}.{n}" for m, n in FORBIDDEN])
def test_every_forbidden_global_is_refused_before_it_is_looked_up(
    tmp_path: Path, module: str, name: str
) -> None:
    marker = tmp_path / "pwned"
    for payload in (
        calling(module, name, f"touch {marker}"),
        calling_by_global(module, name, f"touch {marker}"),
    ):
        with pytest.raises(snapshot.SnapshotRefused, match=f"references .*{module}.{name}"):
            snapshot.decode(signed(payload, 0), SIGNER, 0)
        assert not marker.exists()


def test_a_persistent_reference_is_refused() -> None:
    with pytest.raises(snapshot.SnapshotRefused, match="persistent"):
        snapshot.decode(signed(b"\x80\x04\x8c\x01x\x94Q.", 0), SIGNER, 0)  # BINPERSID


def test_a_rollback_to_a_snapshot_replaced_by_a_forgery_is_refused(tmp_path: Path) -> None:
    table = MemoryTable()
    processor = processor_over(table, snapshots_kept="2", rollback_min_interval="0")
    state = processor.new_state(0)
    msgs = list(producer.messages(datasets.load("phishing", limit=200)))
    for n in range(2):
        feed(state, msgs[n * 100 : (n + 1) * 100], start=n * 100)
        table[snapshot_key(0, state.runtime.snapshot_seq + 1, 2)] = blob = snapshot.encode(
            state, 10_000_000, SIGNER
        )
        state.runtime.snapshot_started(0.0)
        state.runtime.snapshot_taken(state.offset, len(blob))
    assert [h.seq for h in processor.kept_headers(0)] == [2, 1]  # read once, then from memory
    marker = tmp_path / "pwned"
    table[snapshot_key(0, 1, 2)] = signed(
        pickle.dumps(Touch(marker)), 0, seq=1, signer=Signer(Secret(OTHER_KEY))
    )

    def control(offset: int, control: Control) -> str:
        outcome = state.apply(offset, control, 0.0, processor.store.rollback_source)
        assert isinstance(outcome, Controlled)
        return outcome.outcome

    outcome = control(200, Control("control-1", "rollback", seq=1))
    assert outcome.startswith("refused: snapshot #1 unusable:") and "signature" in outcome
    assert not marker.exists() and processor.store.refused == {0: 1}
    outcome = control(201, Control("control-2", "rollback", seq=2))
    assert outcome == "rolled back to snapshot #2 (offset 199)"


# -- every preset's state through the restricted unpickler ------------------------------------

BINARY = [p for p in models.PRESETS if models.resolve(p).task == "binary"]


def trump(limit: int) -> Iterator[datasets.Sample]:
    for i, (x, y) in enumerate(itertools.islice(river_datasets.TrumpApproval(), limit)):
        yield datasets.Sample(f"poll-{i % 7}", f"poll-{i}", x, y)


def preset_states() -> Iterator[tuple[str, PartitionState, list[tuple[bytes | None, bytes]]]]:
    """(name, trained state, the messages that follow) for every preset: binary presets on the
    card, phishing and agrawal streams, with late labels waiting, drift resets, and once all of
    them as challengers of each other with the promotion rule; the anomaly preset on card; the
    regression preset on TrumpApproval."""
    for preset in BINARY:
        for dataset in ("card", "phishing", "agrawal"):
            msgs = list(producer.messages(datasets.load(dataset, limit=450), label_delay=15))
            state = PartitionState(0, models.resolve(preset), PartitionConfig(pending_max=100))
            state.config = replace(state.config, drift_policy="reset")
            feed(state, msgs[:600])
            yield f"{preset}/{dataset}", state, msgs[600:]
    msgs = list(producer.messages(datasets.load("card", limit=900), label_delay=15))
    specs = [models.resolve(p) for p in BINARY]
    state = PartitionState(
        0, specs[0], PartitionConfig(pending_max=100, promote_after=50), challengers=specs[1:]
    )
    feed(state, msgs[:800])
    yield "all binary presets as contenders/card", state, msgs[800:]
    msgs = list(producer.messages(datasets.load("card", limit=700), label_delay=15))
    state = PartitionState(0, models.resolve("half_space_trees"), PartitionConfig(pending_max=100))
    feed(state, msgs[:600])
    yield "half_space_trees/card", state, msgs[600:]
    msgs = list(producer.messages(trump(400), label_delay=5))
    state = PartitionState(0, models.resolve("linear_regression"), PartitionConfig(pending_max=100))
    state.config = replace(state.config, drift_policy="reset")
    feed(state, msgs[:700])
    yield "linear_regression/trump_approval", state, msgs[700:]


def referenced_globals(payload: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a pickle looks up (GLOBAL, and STACK_GLOBAL's two strings, which
    come straight or from the memo)."""
    found, memo, pushed = set(), {}, []
    for op, arg, _ in pickletools.genops(payload):
        if op.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add((module, name))
        elif op.name == "STACK_GLOBAL":
            found.add((pushed[-2], pushed[-1]))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif "UNICODE" in op.name:
            pushed.append(arg)
        elif op.name not in ("FRAME", "PROTO", "STOP"):
            pushed.append(None)
    return found


def test_every_presets_state_round_trips_through_the_restricted_unpickler() -> None:
    seen: set[tuple[str, str]] = set()
    drifts = pending = 0
    names = []
    for name, state, tail in preset_states():
        blob = snapshot.encode(state, 100_000_000, SIGNER)
        payload = blob[len(blob) - snapshot.read_header(blob).payload_bytes :]
        seen |= referenced_globals(payload)
        _, restored = snapshot.decode(blob, SIGNER, 0)
        restored.configure(state.config, [models.resolve(n, state.task.name) for n in state.names()])
        assert restored.names() == state.names() and restored.waiting.events == state.waiting.events, name
        assert restored.metrics.values() == state.metrics.values(), name
        drifts += sum(c.drift.detections for c in state.contenders)
        pending += len(state.waiting.events)
        start = state.offset + 1
        assert feed(restored, tail, start=start) == feed(state, tail, start=start), name
        names.append(name)
    assert {n.split("/")[0] for n in names} >= set(models.PRESETS)
    assert drifts > 0 and pending > 0  # states with detections and with events waiting for labels
    outside = {(m, n) for m, n in seen if not m.startswith(("river.", "streamapp."))}
    assert outside <= snapshot.ALLOWED_GLOBALS, outside - snapshot.ALLOWED_GLOBALS
    assert ("collections", "OrderedDict") in outside and ("functools", "partial") in outside


def test_another_deployments_snapshot_is_refused_even_with_the_same_key() -> None:
    """The app id is part of every signature: two deployments sharing a key stay apart."""
    other_app = Signer(Secret(TEST_SIGNING_KEY), app="another-app")
    blob = snapshot.encode(state_of(), 10_000_000, other_app)
    with pytest.raises(snapshot.SnapshotRefused, match="signature"):
        snapshot.decode(blob, SIGNER, 0)


def test_a_snapshot_that_cannot_be_written_is_counted_and_learning_goes_on() -> None:
    harness = Harness.build(snapshot_every_events="2")

    def broken(partition: int, key: str, blob: bytes) -> None:
        raise RuntimeError("the changelog's metadata lists no partitions yet")

    harness.snapshots.put = broken  # type: ignore[method-assign]
    values = [value for _, value in producer.messages(datasets.load("phishing", limit=10))]
    harness.feed(values)  # raises if the failure escapes
    state = harness.state
    assert state.runtime.snapshot_errors >= 1 and state.runtime.snapshot_seq == 0
    assert state.events_learned == 10 and not harness.deadletters
