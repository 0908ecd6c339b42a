"""A subscribed topic the consumer's metadata lacks is asked for again, said once per change,
and a consumer that cannot answer yet never stops the worker (application.UnknownTopics)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamapp.application import UnknownTopics


class Consumer:
    def __init__(self, answers: list[set[str] | Exception]) -> None:
        self.answers = answers

    async def refresh_unknown_topics(self) -> set[str]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class App:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer


def test_missing_topics_are_reported_once_each_time_they_change(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[set[str] | Exception] = [
        RuntimeError("consumer not started"),
        {"app-sequence"},
        {"app-sequence"},
        set(),
        {"app-sequence", "events"},
    ]
    check = UnknownTopics(App(Consumer(answers)))  # type: ignore[arg-type]

    async def run() -> Any:
        for _ in range(5):
            await check.check()

    asyncio.run(run())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    said = "streamapp: the consumer's metadata lacks subscribed topics {}; asked the broker again"
    assert warnings == [said.format("app-sequence"), said.format("app-sequence, events")]
    assert check.missing == {"app-sequence", "events"}
