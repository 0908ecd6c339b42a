"""Code named in configuration ('package.module:name'): a model factory, a record transform.

Loaded once at start, so a wrong path fails there with what to fix, never on an event.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from streamapp.settings import ConfigError


def load_callable(path: str, what: str, hint: str = "") -> Callable[..., Any]:
    """The callable `name` of `package.module` for 'package.module:name'; ConfigError naming
    `what` (and `hint`, what else the value could have been) when it is not one."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} {path!r} is {hint}not an import path 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {path!r}: cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"{what} {path!r}: {module_name} has no callable {attr!r}")
    return found
