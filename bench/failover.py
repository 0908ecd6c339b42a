"""Time from killing a worker to every partition being served again, on the local broker.

    .venv/bin/python -m bench.failover [--signal KILL|TERM] [--model hoeffding_tree]

Three workers share 8 partitions while a producer streams card transactions at 300 events/s;
one worker is stopped 15 s in. Reported: the time until every partition is owned by a live
worker again, and until every partition has applied events newer than any it had at the kill.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

from streamapp.settings import Settings
from tests.integration.chaos import Cluster, start_producer
from tests.integration.cluster import unique_env, wait_for


def measure_failover(sig: str, model: str = "hoeffding_tree") -> tuple[int, float, float]:
    """(partitions moved, seconds until all owned again, seconds until all serving again)."""
    env = unique_env(8, model=model)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(env, Path(tmp))
        producer = start_producer(env, events=300 * 90, rate=300)
        try:
            for name in ("w1", "w2", "w3"):
                cluster.start(name)
            time.sleep(15)
            before = {p: s["offset_applied"] for p, (s, _) in cluster.served().items()}
            moved = [p for p, (_, w) in cluster.served().items() if w.datadir.name == "w2"]
            killed_at = time.monotonic()
            cluster.stop("w2", getattr(signal, f"SIG{sig}"))

            def owned() -> bool:
                served = cluster.served()
                return len(served) == 8 and all(served[p][1].datadir.name != "w2" for p in moved)

            wait_for("every partition owned", owned, 120, cluster.logs)
            owned_after = time.monotonic() - killed_at

            def serving() -> bool:
                served = cluster.served()
                return all(served[p][0]["offset_applied"] > before.get(p, -1) for p in range(8))

            wait_for("every partition serving", serving, 120, cluster.logs)
            serving_after = time.monotonic() - killed_at
        finally:
            producer.kill()
            cluster.stop_all()
    return len(moved), owned_after, serving_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("--model", default="hoeffding_tree")
    args = parser.parse_args()
    moved, owned_after, serving_after = measure_failover(args.signal, args.model)
    session = Settings.from_env().session_timeout
    print(f"SIG{args.signal} of 1 of 3 workers ({moved} of 8 partitions), {args.model}, ", end="")
    print(f"session timeout {session:g} s")
    print(f"every partition owned again after {owned_after:.1f} s, ", end="")
    print(f"serving new events after {serving_after:.1f} s")


if __name__ == "__main__":
    main()
