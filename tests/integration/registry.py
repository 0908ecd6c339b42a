"""The local Schema Registry of tools/registry/registry.sh: a session fixture and per-test subjects.

Apicurio Registry's Confluent-compatible API, in memory, global compatibility BACKWARD. One registry
serves the whole session, so a test keeps to subjects under its own prefix (``subject_prefix``) and
never changes the global config (a subject's own, ``PUT /config/{subject}``, is fine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.cluster import ROOT

# tools/registry/registry.sh's variable: a second registry on another port is picked up the same way.
REGISTRY_PORT = int(os.environ.get("REGISTRY_PORT", "8081"))
REGISTRY_URL = f"http://127.0.0.1:{REGISTRY_PORT}/apis/ccompat/v7"
SCRIPT = ROOT / "tools/registry/registry.sh"


def registry_up() -> bool:
    """True when the Confluent-compatible API answers on REGISTRY_PORT."""
    try:
        with urllib.request.urlopen(f"{REGISTRY_URL}/config", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # refused, timed out, an HTTP error (URLError and HTTPError)
        return False


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """The registry's base URL; started (and stopped at the end) unless one answers already."""
    started = False
    if not registry_up():
        if shutil.which("java") is None:
            pytest.fail(
                "java not found: the Schema Registry tests run Apicurio Registry "
                "(tools/registry/registry.sh), which needs a JDK 17 "
                "(Debian: apt-get install openjdk-17-jdk-headless) and, once, Maven to fetch it",
                pytrace=False,
            )
        result = subprocess.run([str(SCRIPT), "up"], check=False)
        if result.returncode != 0:
            pytest.fail(f"tools/registry/registry.sh up failed (exit {result.returncode}), see above")
        started = True
    yield REGISTRY_URL
    if started:
        subprocess.run([str(SCRIPT), "down"], check=True)


def subject_prefix(label: str = "test") -> str:
    """A subject prefix no other test (or earlier run on a long-lived registry) uses."""
    return f"streamapp-test-{label}-{uuid.uuid4().hex[:12]}"
