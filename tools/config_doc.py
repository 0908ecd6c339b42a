"""docs/configuration.md, generated from the settings' own defaults and docs (streamapp.settings).

    .venv/bin/python tools/config_doc.py > docs/configuration.md
    .venv/bin/python tools/config_doc.py --write

tests/unit/test_readme.py fails when the file differs from what this prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamapp.settings import documented

TARGET = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
COMMAND = ".venv/bin/python tools/config_doc.py --write"

HEADER = f"""\
# Configuration

<!-- Generated from streamapp/settings.py by tools/config_doc.py: do not edit by hand.
     Regenerate with: {COMMAND} -->

Environment variables, read and checked at start: a wrong or unknown `STREAMAPP_*` variable stops
the worker (and every `streamapp` command) with a message that says what to fix. `streamapp
settings` prints them all with their values (secrets as `********`). Faust's own worker options
(`--web-port`, `--datadir`, `-l`) override the matching ones.

| Variable | Default | Meaning |
|---|---|---|
"""

FOOTER = """
Rules between settings, checked at start:

* `STREAMAPP_MAX_SNAPSHOT_BYTES` must be below `STREAMAPP_KAFKA_MAX_MESSAGE_BYTES` (room for the
  record's framing).
* `STREAMAPP_PENDING_LABELS_MAX_BYTES` must be at most half of `STREAMAPP_MAX_SNAPSHOT_BYTES`: the
  events waiting for a label are part of every snapshot.
* `STREAMAPP_CHALLENGERS` must not name the champion (`STREAMAPP_MODEL`), nor a model twice;
  `STREAMAPP_PROMOTE_AFTER` needs challengers.
* `STREAMAPP_SIGNING_KEY_PREVIOUS` needs `STREAMAPP_SIGNING_KEY`.
* The events, predictions and dead-letter topics must differ.
* SASL protocols need `STREAMAPP_SASL_USERNAME` and `STREAMAPP_SASL_PASSWORD`; SASL settings
  without a SASL protocol, or TLS files without SSL or SASL_SSL, are refused (they would be
  ignored); the TLS files must exist and be readable; `STREAMAPP_SSL_KEYFILE` needs
  `STREAMAPP_SSL_CERTFILE`.

When snapshots are taken (each interval spread per partition, the first one counted from the
model's creation): [operations.md, "Snapshots"](operations.md#snapshots). The Kafka security
settings in use: [operations.md, "Managed Kafka"](operations.md#managed-kafka).
"""


def _cell(text: str) -> str:
    """Table cells cannot hold a bare '|'."""
    return text.replace("|", "\\|")


def render() -> str:
    """The whole of docs/configuration.md."""
    rows = []
    for name, default, doc in documented():
        shown = f"`{_cell(default)}`" if default else "(empty)"
        rows.append(f"| `{name}` | {shown} | {_cell(doc)} |\n")
    return HEADER + "".join(rows) + FOOTER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {TARGET.relative_to(TARGET.parents[1])}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        TARGET.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
