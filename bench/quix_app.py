"""The peer: the same job in Quix Streams, with its RocksDB state store and checkpointing on.

    python -m bench.quix_app --topic events-x --output predictions-x --group g

Quix state is scoped to the message key, so, as in streamapp, each partition's model lives in
memory and is snapshotted every 5,000 events of the partition into the state of the event at
hand (Quix writes it to RocksDB and its changelog at each checkpoint, every 5 s by default).
"""

from __future__ import annotations

import base64
import tempfile
import time
from typing import Any

from quixstreams import Application, State, message_context

from bench.plain_loop import peer_arguments
from streamapp import models, records, snapshot
from streamapp.partition import PartitionConfig, PartitionState, Scored
from streamapp.records import Event
from streamapp.settings import Secret
from streamapp.signing import Signer

SNAPSHOT_EVERY = 5000
CHUNK = 512 * 1024  # characters per state value: Quix's changelog keeps the broker's 1 MB limit
SIGNER = Signer(Secret("bench-signing-key-0123456789abcdefghij"))  # snapshots are signed, as in streamapp


def main() -> None:
    args = peer_arguments(__doc__)
    spec = models.resolve(args.model)
    states: dict[int, PartitionState] = {}

    def score(value: bytes, state: State) -> bytes | None:
        context = message_context()
        partition, offset = context.partition, context.offset
        model = states.get(partition)
        if model is None:
            model = states[partition] = PartitionState(partition, spec, PartitionConfig(pending_max=0))
        received = time.time()
        try:
            event = records.parse(value)
        except records.BadEvent:
            return None
        if not isinstance(event, Event):
            return None
        applied = model.apply(offset, event)
        if not isinstance(applied, Scored):
            return None
        if model.runtime.events_since_snapshot >= SNAPSHOT_EVERY:
            # Quix state values go through JSON: the snapshot travels as base64 text, in chunks
            # (a forest's snapshot passes the 1 MB record limit of Quix's changelog topic).
            text = base64.b64encode(snapshot.encode(model, 1 << 30, SIGNER)).decode()
            chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
            for i, chunk in enumerate(chunks):
                state.set(f"snapshot-{i}", chunk)
            state.set("snapshot-chunks", len(chunks))
            model.runtime.snapshot_started(time.time())
            model.runtime.snapshot_taken(model.offset, 0)
        doc: dict[str, Any] = {
            "id": event.id,
            "partition": partition,
            "offset": offset,
            **applied.prediction,
            "learned": applied.learned,
            "timings": {"message_latency_s": received},
        }
        return records.encode(doc)

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
        )
        source = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
        sink = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
        frame = app.dataframe(source)
        frame = frame.apply(score, stateful=True).filter(lambda value: value is not None)
        frame.to_topic(sink)
        app.run()


if __name__ == "__main__":
    main()
