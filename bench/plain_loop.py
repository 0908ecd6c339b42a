"""The paper's design: a plain Kafka consumer loop with one model per partition in memory.

    python -m bench.plain_loop --topic events-x --output predictions-x --model hoeffding_tree

One process reads the partitions it is given (all by default), in a consumer group, and for
each event does the same work as a streamapp worker (decode, predict, update metrics, learn,
emit the prediction) with the same PartitionState, but nothing else: no snapshots, no recovery,
no web views. What streamapp costs beyond it is the price of those.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamapp import models, records
from streamapp.partition import PartitionConfig, PartitionState, Scored
from streamapp.records import BadEvent, Event


async def run(bootstrap: str, topic: str, output: str, model: str, group: str) -> None:
    spec = models.resolve(model)
    states: dict[int, PartitionState] = {}
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, batch in batches.items():
                state = states.get(tp.partition)
                if state is None:
                    state = states[tp.partition] = PartitionState(
                        tp.partition, spec, PartitionConfig(pending_max=0)
                    )
                for record in batch:
                    received = time.time()
                    try:
                        event = records.parse(record.value)
                    except BadEvent:
                        continue
                    if not isinstance(event, Event):
                        continue
                    applied = state.apply(record.offset, event)
                    if not isinstance(applied, Scored):
                        continue
                    doc = {
                        "id": event.id,
                        "partition": tp.partition,
                        "offset": record.offset,
                        **applied.prediction,
                        "learned": applied.learned,
                        "timings": {"message_latency_s": received - record.timestamp / 1000},
                    }
                    await producer.send(output, records.encode(doc), key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()


def peer_arguments(description: str | None) -> argparse.Namespace:
    """The command line every peer implementation of the benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default="hoeffding_tree")
    parser.add_argument("--group", default="peer")
    return parser.parse_args()


def main() -> None:
    args = peer_arguments(__doc__)
    asyncio.run(run(args.bootstrap, args.topic, args.output, args.model, args.group))


if __name__ == "__main__":
    main()
