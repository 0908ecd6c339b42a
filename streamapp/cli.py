"""The `streamapp` command: our own subcommands, and Faust's (worker, ...) for everything else.

`streamapp worker -l info --web-port 6067` is exactly `faust -A streamapp.app worker ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from streamapp import datasets
from streamapp.settings import ConfigError, Settings, documented

OWN_COMMANDS = ("produce", "create-topics", "settings", "replay", "snapshots", "switch")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamapp",
        description="Online learning on Kafka streams. Faust's commands (worker, ...) work too: "
        "'streamapp worker -l info'.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    produce = commands.add_parser("produce", help="stream a dataset into the events topic")
    produce.add_argument("--dataset", choices=sorted(datasets.DATASETS), default="card")
    produce.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="messages/s (labels sent apart count); 0 = as fast as possible",
    )
    produce.add_argument("--limit", type=int, default=None, help="stop after this many events")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument(
        "--label-delay",
        type=int,
        default=0,
        metavar="N",
        help="send labels as separate messages N events after their event (0: inline)",
    )
    produce.add_argument("--no-key", action="store_true", help="send without keys (see STREAMAPP_KEY_FIELD)")
    produce.add_argument("--topic", default=None, help="default: STREAMAPP_EVENTS_TOPIC")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.add_argument(
        "--format",
        choices=("json", "avro"),
        default="json",
        help="avro: the dataset as a bank's Avro records (streamapp/demo_avro.py), schemas in "
        "STREAMAPP_SCHEMA_REGISTRY_URL",
    )
    commands.add_parser("create-topics", help="create the events, predictions and dead-letter topics")
    commands.add_parser("settings", help="print every STREAMAPP_* setting with its value")
    replay = commands.add_parser(
        "replay", help="reproduce past predictions from the snapshots and the log, and explain them"
    )
    replay.add_argument("--partition", type=int, required=True)
    replay.add_argument(
        "--offset", type=int, action="append", required=True, help="an event's offset; repeatable"
    )
    snapshots = commands.add_parser("snapshots", help="what this version can do with the snapshots")
    snapshots_commands = snapshots.add_subparsers(dest="snapshots_command", required=True)
    check = snapshots_commands.add_parser(
        "check",
        help="can this version restore the running deployment's snapshots? Run it with the new "
        "version's image before an upgrade (exit 0: yes; 1: some partitions replay; 2: some lose events)",
    )
    check.add_argument("--json", action="store_true", help="one JSON object per partition")
    switch = commands.add_parser(
        "switch",
        help="blue/green upgrade, last step: copy the new deployment's outputs past this one's onto "
        "this one's topics (docs/runbooks/upgrade.md)",
    )
    switch.add_argument("--green-app-id", required=True, help="the new deployment's STREAMAPP_APP_ID")
    switch.add_argument("--green-predictions", required=True, help="its STREAMAPP_PREDICTIONS_TOPIC")
    switch.add_argument("--green-deadletters", required=True, help="its STREAMAPP_DEADLETTER_TOPIC")
    return parser


def _run_own(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command == "settings":
        for name, default, doc in documented():
            value = getattr(settings, name[len("STREAMAPP_") :].lower())
            shown = ",".join(value) if isinstance(value, tuple) else value  # as it is written
            print(f"{name}={shown}    # default {default!r}: {doc}")
        return 0
    if args.command == "replay":
        from streamapp.replay import run

        return run(settings, args.partition, args.offset)
    if args.command == "snapshots":
        from streamapp.snapshot_check import run as check

        return check(settings, args.json)
    if args.command == "switch":
        from streamapp.switch import Green
        from streamapp.switch import run as switch

        return switch(settings, Green(args.green_app_id, args.green_predictions, args.green_deadletters))
    if args.command == "create-topics":
        from streamapp.topics import create_topics

        for topic, status in asyncio.run(create_topics(settings)).items():
            print(f"{topic}: {status} ({settings.partitions} partitions)")
        return 0
    from streamapp.producer import produce

    if args.topic:
        settings = Settings.from_env(events_topic=args.topic)
    if args.format == "avro" and not settings.schema_registry_url:
        raise ConfigError("produce --format avro needs STREAMAPP_SCHEMA_REGISTRY_URL, where the schemas go")
    sent = asyncio.run(
        produce(
            settings,
            args.dataset,
            rate=args.rate,
            limit=args.limit,
            seed=args.seed,
            label_delay=args.label_delay,
            keyed=not args.no_key,
            progress=not args.quiet,
            avro_format=args.format == "avro",
        )
    )
    print(f"produced {sent} events to {settings.events_topic}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in (*OWN_COMMANDS, "-h", "--help"):
        try:
            return _run_own(argv)
        except ConfigError as exc:
            print(f"streamapp: configuration error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    # A model factory (STREAMAPP_MODEL=module:factory) in the current directory imports without
    # PYTHONPATH, as under `python -m`; appended, so it never shadows an installed package.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    from streamapp.app import app  # reads the settings; exits with a message when they are wrong

    sys.argv = ["streamapp", *argv]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
