"""The app that `faust -A streamapp.app worker` and `streamapp worker` run, from STREAMAPP_* settings."""

from __future__ import annotations

from streamapp.application import create_app
from streamapp.settings import ConfigError, Settings

try:
    settings = Settings.from_env()
    app = create_app(settings)
except ConfigError as exc:
    raise SystemExit(f"streamapp: configuration error: {exc}") from None
