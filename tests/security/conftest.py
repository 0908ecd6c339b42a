"""The security tests attack real workers through the real broker: the same broker fixture as
the integration tests (started when none answers)."""

from __future__ import annotations

from tests.integration.conftest import kafka, pytest_collection_modifyitems

__all__ = ["kafka", "pytest_collection_modifyitems"]
