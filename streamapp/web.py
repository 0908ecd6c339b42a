"""Web views of this worker's models (read-only: they never touch what the agent owns)."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from streamapp.agent import Learner


def register(app: faust.App, learner: Learner) -> None:
    @app.page("/models")
    class Models(View):
        """Every partition this worker owns: offsets, counters, metrics, last snapshot."""

        async def get(self, request: Request) -> Response:
            summary: dict[str, Any] = learner.summary()
            summary["worker"] = app.conf.canonical_url.human_repr()
            return self.json(summary)

    @app.page("/health")
    class Health(View):
        """The process answers (a liveness probe)."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})
