"""Integration tests need the local Kafka broker: start it when none answers, stop it after."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.cluster import ROOT, broker_up
from tests.integration.registry import schema_registry  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def kafka() -> Iterator[None]:
    started = False
    if not broker_up():
        subprocess.run([str(ROOT / "tools/kafka/kafka.sh"), "up"], check=True)
        started = True
    yield
    if started:
        subprocess.run([str(ROOT / "tools/kafka/kafka.sh"), "down"], check=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
