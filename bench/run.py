"""`make bench`: streamapp against the physical limit and the paper's design, in one run.

    python -m bench.run [--quick] [--soak 20m]

For each model, the same job (consume an event, predict, learn from its label, emit the
prediction) on the same card transactions in 8 partitions, by:
  limit       River's own loop over the events in memory (no Kafka): the physical limit
  plain loop  the paper's design: an aiokafka consumer loop, models in memory, one process
  quix        the peer framework: Quix Streams, its RocksDB state and checkpointing on
  streamapp   1 worker and 2 workers, snapshots on at their defaults
  streamapp   the same, exactly once (STREAMAPP_PROCESSING_GUARANTEE=exactly_once), for the models
              of EXACTLY_ONCE_MODELS, each right after the same at-least-once run: its cost as a ratio
Every implementation runs once per round, the rounds one after another (ROUNDS), so a noisy
minute on a shared machine hits all of them; each figure is the median over the rounds, each
ratio the median of the ratios within a round, shown with its range. Then streamapp's end-to-end
latency at 50% (LATENCY_RUNS times: a p99 target must hold in every run) and 80% of its measured
maximum with an open-loop producer (exactly once: at the 50% rate and at half its own maximum),
timed after a warm-up of WARMUP seconds at the same rate and also with it, its snapshot overhead,
and optionally a soak at 70% of the maximum. Results go to bench/RESULTS.md and bench/*.png;
measurements come from the output topics (bench/measure.py); exactly-once outputs count when a
read_committed consumer can see them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import measure, plots, soak
from bench.failover import measure_failover
from streamapp import datasets, models, producer
from streamapp.partition import PartitionConfig, PartitionState
from streamapp.records import Event
from streamapp.settings import Settings
from tests.integration.cluster import ROOT, Worker, unique_env, wait_for

PARTITIONS = 8
MODELS = ("hoeffding_tree", "half_space_trees", "adaptive_random_forest")
OUT = ROOT / "bench"
PEERS = {"plain loop": "bench.plain_loop", "quix streams": "bench.quix_app"}
AT_LEAST_ONCE = ["streamapp 1 worker", "streamapp 2 workers"]
EXACTLY_ONCE = ["streamapp 1 worker, exactly once", "streamapp 2 workers, exactly once"]
IMPLEMENTATIONS = ["limit", "plain loop", "quix streams", *AT_LEAST_ONCE, *EXACTLY_ONCE]
#: the order of the runs: each exactly-once run right after its at-least-once counterpart
RUNS = ["plain loop", "quix streams", AT_LEAST_ONCE[0], EXACTLY_ONCE[0], AT_LEAST_ONCE[1], EXACTLY_ONCE[1]]
#: the models run exactly once too: a transaction costs per output and per commit, not per model,
#: so the fast tree and the slow forest bound it; HalfSpaceTrees runs at the tree's speed
EXACTLY_ONCE_MODELS = ("hoeffding_tree", "adaptive_random_forest")
#: rounds of every implementation, and runs of the latency at 50%
ROUNDS = 3
LATENCY_RUNS = 3
#: seconds a latency run feeds its worker before the events it times
WARMUP = 2.0


@dataclass(frozen=True)
class Latency:
    label: str  # the load: "50%" (of one worker's measured maximum), "50%, exactly once"...
    rate: float  # events/s
    timings: measure.Timings  # of the events produced after the warm-up
    with_warmup: measure.Timings  # of every event, the warm-up's too


@dataclass
class Result:
    #: implementation -> events/s in each round
    throughput: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)  # implementation -> peak MB per process
    latency: list[Latency] = field(default_factory=list)
    snapshots_off: float = 0.0  # one worker's events/s with snapshots off (0: not measured)

    @property
    def medians(self) -> dict[str, float]:
        return {name: statistics.median(runs) for name, runs in self.throughput.items()}

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """numerator / denominator within each round."""
        pairs = zip(self.throughput[numerator], self.throughput[denominator], strict=False)
        return [a / b for a, b in pairs]

    def record(self, name: str, events_per_s: float, memory: float = 0.0) -> None:
        self.throughput.setdefault(name, []).append(events_per_s)
        self.memory[name] = max(self.memory.get(name, 0.0), memory)


def limit(model: str, events: int) -> float:
    """River alone: predict_proba/score, learn, over dicts in memory, one model per partition."""
    spec = models.resolve(model)
    states = [PartitionState(p, spec, PartitionConfig(pending_max=0)) for p in range(PARTITIONS)]
    samples = list(datasets.load("card", limit=events))
    start = time.perf_counter()
    for offset, sample in enumerate(samples):
        states[offset % PARTITIONS].apply_event(Event(sample.id, sample.x, sample.y, None), offset)
    return events / (time.perf_counter() - start)


def fresh_env(model: str, **extra: str) -> dict[str, str]:
    """New topics and group for one run; the broker stamps the outputs' arrival times."""
    env = unique_env(PARTITIONS, model=model, **extra)
    measure.stamp_on_arrival(Settings.from_env(env).predictions_topic)
    return env


def exactly_once_env(model: str, **extra: str) -> dict[str, str]:
    return fresh_env(model, processing_guarantee="exactly_once", **extra)


def feed(env: dict[str, str], events: int, rate: float = 0) -> None:
    """Produce the card events (as fast as possible by default: ~70k/s, above any consumer)."""
    asyncio.run(producer.produce(Settings.from_env(env), "card", rate=rate, limit=events, progress=False))


def is_ready(worker: Worker) -> bool:
    return "Worker ready" in worker.log_path.read_text()


def start_workers(env: dict[str, str], count: int, root: Path) -> list[Worker]:
    """Workers that have joined the group and finished their first recovery."""
    workers = [Worker(env, root / f"w{i}").start() for i in range(count)]
    for worker in workers:
        wait_for("the worker to be ready", partial(is_ready, worker), 60)
    time.sleep(3)  # let the last join's rebalance settle
    return workers


@contextlib.contextmanager
def visibility(settings: Settings) -> Iterator[measure.Visibility | None]:
    """With exactly_once, when the predictions become visible to read_committed consumers."""
    if settings.processing_guarantee != "exactly_once":
        yield None
        return
    with measure.Visibility(settings.predictions_topic, PARTITIONS) as visible:
        yield visible


def wait_for_outputs(
    settings: Settings, events: int, timeout: float, visible: measure.Visibility | None
) -> None:
    """Until the workers' predictions of `events` events are all there (committed, exactly once)."""
    if visible is None:
        measure.wait_for_count(settings.predictions_topic, PARTITIONS, events, timeout)
    else:
        topic, group = settings.events_topic, settings.app_id
        measure.wait_for_committed(group, topic, PARTITIONS, events, timeout, visible)


def run_workers(env: dict[str, str], count: int, events: int, timeout: float) -> tuple[float, float]:
    """(events/s, peak MB of the largest worker) of `count` streamapp workers."""
    settings = Settings.from_env(env)
    with tempfile.TemporaryDirectory() as tmp:
        workers = start_workers(env, count, Path(tmp))
        try:
            with visibility(settings) as visible:
                feed(env, events)
                wait_for_outputs(settings, events, timeout, visible)
            memory = max(measure.peak_rss_mb(w.proc.pid) for w in workers if w.proc)
        finally:
            for worker in workers:
                worker.stop()
    timings = measure.timings(settings.predictions_topic, settings.events_topic, PARTITIONS, visible)
    return timings.throughput, memory


def run_process(module: str, env: dict[str, str], events: int, timeout: float) -> tuple[float, float]:
    """(events/s, peak MB) of one process of a peer implementation (bench.plain_loop, bench.quix_app)."""
    settings = Settings.from_env(env)
    command = [sys.executable, "-m", module, "--topic", settings.events_topic]
    command += ["--output", settings.predictions_topic, "--model", settings.model, "--group", settings.app_id]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    try:
        time.sleep(4)  # joined and assigned
        feed(env, events)
        alive = lambda: proc.poll() is None  # noqa: E731
        try:
            measure.wait_for_count(settings.predictions_topic, PARTITIONS, events, timeout, alive)
        except (RuntimeError, TimeoutError) as exc:
            print(f"  {module} FAILED: {exc}", flush=True)
            return float("nan"), measure.peak_rss_mb(proc.pid)
        memory = measure.peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    timings = measure.timings(settings.predictions_topic, settings.events_topic, PARTITIONS)
    return timings.throughput, memory


def latency(
    model: str, rate: float, seconds: float, exactly_once: bool = False
) -> tuple[measure.Timings, measure.Timings]:
    """One worker, ready, fed by an open-loop producer at `rate` events/s for WARMUP seconds and
    then `seconds`: the timings of the events after the warm-up (the steady state a latency
    target is about), and of all (a worker's first second pays its clients' first requests)."""
    events = int(rate * (WARMUP + seconds))
    env = exactly_once_env(model) if exactly_once else fresh_env(model)
    settings = Settings.from_env(env)
    with tempfile.TemporaryDirectory() as tmp:
        (worker,) = start_workers(env, 1, Path(tmp))
        try:
            with visibility(settings) as visible:
                started = time.time()
                feed(env, events, rate)
                wait_for_outputs(settings, events, WARMUP + seconds + 120, visible)
        finally:
            worker.stop()
    topics = (settings.predictions_topic, settings.events_topic, PARTITIONS, visible)
    return measure.timings(*topics, since=started + WARMUP), measure.timings(*topics)


def print_latency(run: Latency) -> None:
    timings = run.timings
    print(
        f"  latency at {run.label} ({run.rate:,.0f}/s): p50 {timings.percentile(0.5) * 1000:.1f} ms, "
        f"p99 {timings.percentile(0.99) * 1000:.1f} ms, max {max(timings.latencies) * 1000:.1f} ms; "
        f"with the warm-up: p99 {run.with_warmup.percentile(0.99) * 1000:.1f} ms, "
        f"max {max(run.with_warmup.latencies) * 1000:.1f} ms",
        flush=True,
    )


def machine() -> str:
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    cpu, python = measure.cpu_model(), platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {python}, Kafka 4.2.2 (local, KRaft)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, about 15 minutes")
    parser.add_argument("--soak", default="", help="also hold 70%% of the maximum rate this long: 20m, 90s")
    args = parser.parse_args()
    sizes = (
        {m: 30_000 for m in MODELS} | {"adaptive_random_forest": 3_000}
        if args.quick
        else {"hoeffding_tree": 200_000, "half_space_trees": 200_000, "adaptive_random_forest": 100_000}
    )
    results: dict[str, Result] = {}
    started = time.monotonic()
    for model in MODELS:
        events = sizes[model]
        result = results[model] = Result()
        print(f"== {model}: {events} card events in {PARTITIONS} partitions, {ROUNDS} rounds", flush=True)
        for round_ in range(1, ROUNDS + 1):
            run_round(model, events, result, round_)
        if not args.quick:
            off = fresh_env(model, snapshot_every_events="1000000000", snapshot_every_seconds="1e9")
            result.snapshots_off, _ = run_workers(off, 1, events, events / 200 + 300)
            print(f"  snapshots off: {result.snapshots_off:,.0f} events/s", flush=True)
        medians = result.medians
        one, one_eo = medians["streamapp 1 worker"], medians.get(EXACTLY_ONCE[0])
        # (label, rate, exactly once, runs): exactly once at the rate of the 50% row, and (not
        # quick) at half its own maximum: the first overloads it when exactly once costs over half
        loads = [("50%", 0.5 * one, False, LATENCY_RUNS), ("80%", 0.8 * one, False, 1)]
        if one_eo is not None:
            loads += [("50%, exactly once", 0.5 * one, True, 1)]
            if not args.quick:
                loads += [("50% of its maximum, exactly once", 0.5 * one_eo, True, 1)]
        for label, rate, exactly_once, runs in loads if model == "hoeffding_tree" or not args.quick else ():
            for run in range(1, runs + 1):
                steady, everything = latency(model, rate, 5 if args.quick else 20, exactly_once)
                name = label if runs == 1 else f"{label}, run {run}"
                result.latency.append(Latency(name, rate, steady, everything))
                print_latency(result.latency[-1])
    failover = {} if args.quick else {sig: measure_failover(sig) for sig in ("KILL", "TERM")}
    soak_lines: list[str] = []
    if args.soak:
        seconds = parse_duration(args.soak)
        rate = 0.7 * results["hoeffding_tree"].medians["streamapp 1 worker"]
        soak_lines = soak.report(soak.soak("hoeffding_tree", rate, seconds), "hoeffding_tree", rate)
    report = write_results(results, failover, soak_lines, sizes, args.quick)
    print(report)
    print(f"bench finished in {(time.monotonic() - started) / 60:.1f} min; see bench/RESULTS.md")


def run_round(model: str, events: int, result: Result, round_: int) -> None:
    """Every implementation once, in RUNS order: the limit, the peers, streamapp."""
    result.record("limit", limit(model, events))
    print(
        f"  round {round_}: limit (River in memory): {result.throughput['limit'][-1]:,.0f} events/s",
        flush=True,
    )
    timeout = events / 200 + 300
    for name in RUNS:
        exactly_once = name in EXACTLY_ONCE
        if exactly_once and model not in EXACTLY_ONCE_MODELS:
            continue
        env = exactly_once_env(model) if exactly_once else fresh_env(model)
        if name in PEERS:
            throughput, memory = run_process(PEERS[name], env, events, timeout)
        else:
            throughput, memory = run_workers(env, 1 if "1 worker" in name else 2, events, timeout)
        result.record(name, throughput, memory)
        print(f"  round {round_}: {name}: {throughput:,.0f} events/s, peak {memory:.0f} MB", flush=True)


def spread(values: list[float], digits: int = 2) -> str:
    """The median, and the range when there is more than one value."""
    if not values:
        return "-"
    median = f"{statistics.median(values):.{digits}f}"
    return median if len(values) == 1 else f"{median} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def write_results(
    results: dict[str, Result],
    failover: dict[str, tuple[int, float, float]],
    soak_lines: list[str],
    sizes: dict[str, int],
    quick: bool,
) -> str:
    """bench/RESULTS.md and the plots; returns the main table."""
    names = IMPLEMENTATIONS
    (one, two), (one_eo, two_eo) = AT_LEAST_ONCE, EXACTLY_ONCE
    # (column, numerator, denominator)
    ratios = [
        ("1 worker / limit", one, "limit"),
        ("2 workers / 1 worker", two, one),
        ("exactly once / at least once, 1 worker", one_eo, one),
        ("exactly once / at least once, 2 workers", two_eo, two),
    ]
    lines = [
        "| model | events | " + " | ".join(names) + " | " + " | ".join(r[0] for r in ratios) + " |",
        "|---|---|" + "---|" * (len(names) + len(ratios)),
    ]
    for model, result in results.items():
        t = result.medians
        cells = [f"{t[n]:,.0f}" if n in t else "-" for n in names]
        cells += [spread(result.ratios(a, b)) if a in t and b in t else "-" for _, a, b in ratios]
        lines.append(f"| {model} | {sizes[model]:,} | " + " | ".join(cells) + " |")
    peers = ["| model | 1 worker / plain loop | 1 worker / quix streams |", "|---|---|---|"]
    for model, result in results.items():
        cells = [spread(result.ratios(one, peer)) if peer in result.throughput else "-" for peer in PEERS]
        peers.append(f"| {model} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    memory = ["| model | " + " | ".join(names[1:]) + " |", "|---|" + "---|" * (len(names) - 1)]
    for model, result in results.items():
        mb = result.memory
        memory.append(
            f"| {model} | " + " | ".join(f"{mb[n]:.0f} MB" if n in mb else "-" for n in names[1:]) + " |"
        )
    latency = [
        f"| model | load | events/s | p50 | p99 | max | with the first {WARMUP:g} s: p99 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, result in results.items():
        for run in result.latency:
            timings, everything = run.timings, run.with_warmup
            latency.append(
                f"| {model} | {run.label} | {run.rate:,.0f} | {timings.percentile(0.5) * 1000:.1f} ms | "
                f"{timings.percentile(0.99) * 1000:.1f} ms | {max(timings.latencies) * 1000:.1f} ms | "
                f"{everything.percentile(0.99) * 1000:.1f} ms | {max(everything.latencies) * 1000:.1f} ms |"
            )
    overhead = ["| model | snapshots off | at defaults | cost |", "|---|---|---|---|"]
    for model, result in results.items():
        if result.snapshots_off:
            on = result.medians["streamapp 1 worker"]
            overhead.append(
                f"| {model} | {result.snapshots_off:,.0f} | {on:,.0f} | {1 - on / result.snapshots_off:.1%} |"
            )
    sections = [
        "# Benchmark results",
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{' (--quick)' if quick else ''} on "
        f"{machine()}. Data: synthetic card transactions (streamapp's `card` dataset, seed 42), keyed by "
        f"card, in {PARTITIONS} partitions, produced at ~70k/s to implementations already running. "
        "Job: decode, predict, update metrics, learn, emit the prediction. "
        "Throughput and latency are read from the output topics' timestamps "
        "(bench/measure.py). Reproduce with `make bench` (`make bench QUICK=1` for a short run).",
        "",
        "## Throughput (events/s)",
        "",
        f"The median of {ROUNDS} rounds, every implementation once per round; each ratio is the "
        "median of its ratios within a round, with their range in brackets.",
        "",
        "Exactly once: STREAMAPP_PROCESSING_GUARANTEE=exactly_once at its default transaction "
        "interval, each run right after the same at-least-once run; its predictions count "
        "when a read_committed consumer can see them (their transaction committed), and the last "
        "two columns are its cost, exactly-once over at-least-once throughput. "
        f"Not run for {', '.join(m for m in MODELS if m not in EXACTLY_ONCE_MODELS)} "
        "(as fast as the Hoeffding tree).",
        "",
        table,
        "",
        "\n".join(peers),
        "",
        "![throughput](throughput.png)",
        "",
        "## Peak memory per process",
        "",
        "\n".join(memory),
        "",
        "## End-to-end latency, one worker, open-loop producer",
        "",
        f"The events produced after a warm-up of {WARMUP:g} s at the same rate (the steady state a "
        "latency target is about; the last two columns count the warm-up's events too: a worker's "
        "first second pays its clients' first requests). "
        "From the event's produce time to its prediction's produce time, at 50% and 80% of the "
        f"worker's measured maximum (at 50%, {LATENCY_RUNS} runs, each on its own). Exactly once, "
        "at the rate of the 50% row and (full runs) at "
        "half of its own measured maximum: to the time the prediction became visible to a read_committed "
        "consumer, after its transaction committed (the last stable offset, read every "
        f"{measure.VISIBILITY_POLL * 1000:.0f} ms). A rate above the exactly-once maximum builds "
        "a backlog, whose latency grows with the length of the run.",
        "",
        "\n".join(latency),
        "",
        "![latency](latency.png)",
    ]
    if len(overhead) > 2:
        sections += ["", "## Snapshot overhead (one worker)", "", "Run-to-run noise is a few percent.", ""]
        sections.append("\n".join(overhead))
    if failover:
        sections += ["", "## Fail-over (3 workers, 8 partitions, 300 events/s, Hoeffding tree)", ""]
        sections += [
            "| signal | partitions moved | all owned after | all serving after |",
            "|---|---|---|---|",
        ]
        for sig, (moved, owned, serving) in failover.items():
            sections.append(f"| SIG{sig} | {moved} | {owned:.1f} s | {serving:.1f} s |")
    if soak_lines:
        sections += ["", *soak_lines]
    (OUT / "RESULTS.md").write_text("\n".join(sections) + "\n")
    plots.throughput(results, names, OUT / "throughput.png")
    plots.latency(results, OUT / "latency.png")
    return table


if __name__ == "__main__":
    main()
