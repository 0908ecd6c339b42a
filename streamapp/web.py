"""Web views of this worker's models (read-only: they never change what the agent owns)."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from streamapp import records
from streamapp.agent import Learner

MAX_PROBES = 10_000


def register(app: faust.App, learner: Learner) -> None:
    @app.page("/models")
    class Models(View):
        """Every partition this worker owns: offsets, counters, metrics, snapshot, recovery."""

        async def get(self, request: Request) -> Response:
            summary: dict[str, Any] = learner.summary()
            summary["worker"] = app.conf.canonical_url.human_repr()
            return self.json(summary)

    @app.page("/models/{partition}/predict")
    class Predict(View):
        """Score feature sets with one local partition's model, without learning.

        Body: {"x": [{feature: value, ...}, ...]}; answer: {"predictions": [...]} in that order.
        """

        async def post(self, request: Request, partition: str) -> Response:
            if not partition.isdigit():
                return self.error(400, f"partition must be a whole number, got {partition!r}")
            state = learner.states.get(int(partition))
            if state is None:
                return self.error(404, f"partition {partition} is not served by this worker")
            try:
                body = await request.json()
            except ValueError:
                return self.error(400, 'the body must be JSON: {"x": [{...}, ...]}')
            probes = body.get("x") if isinstance(body, dict) else None
            if not isinstance(probes, list) or len(probes) > MAX_PROBES:
                return self.error(400, f"'x' must be a list of at most {MAX_PROBES} feature objects")
            try:
                features = [records.features(x) for x in probes]
            except records.BadEvent as exc:
                return self.error(400, str(exc))
            return self.json({"predictions": [state.predict(x) for x in features]})

    @app.page("/health")
    class Health(View):
        """The process answers (a liveness probe)."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})
