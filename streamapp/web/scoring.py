"""Scoring on request, without learning: feature sets with one partition's champion
(/models/{partition}/predict), or one event by key with its partition's (/predict)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
from aiohttp import web as aioweb
from aiokafka.partitioner import murmur2
from faust.web import Request

from streamapp import records
from streamapp.openapi import MAX_PROBES
from streamapp.web.base import PartitionView, json_response, refuse

#: longest a probe batch holds the event loop before it lets the processor (and others) run
SLICE_SECONDS = 0.005


def partition_of(key: str, partitions: int) -> int:
    """The partition a producer's default partitioner (Java's and aiokafka's) gives `key`."""
    return (murmur2(key.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF) % partitions


class ModelError(Exception):
    """The model cannot score a feature set (e.g. a string where it computes with numbers)."""


async def score_in_slices(
    predict: Callable[[dict[str, records.Feature]], Any],
    features: Sequence[dict[str, records.Feature]],
    budget: float = SLICE_SECONDS,
) -> list[Any]:
    """Score on the event loop, yielding to it every `budget` seconds.

    Not in an executor: the processor mutates the models on the loop, and River's models are not
    safe to read while they learn. Between slices the processor may apply events, so a batch's
    later predictions can come from a model that learned a few more events.
    """
    out = []
    started = time.perf_counter()
    for index, x in enumerate(features):
        try:
            out.append(predict(x))
        except Exception as exc:  # any model's own error on these features: the caller's 422
            raise ModelError(
                f"feature set {index}: the model cannot score it: {type(exc).__name__}: {exc}"
            ) from exc
        if time.perf_counter() - started > budget:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return out


def parse_probes(body: bytes, limits: records.Limits) -> list[dict[str, records.Feature]]:
    """The feature sets of a body {"x": [{feature: value, ...}, ...]}; a 400 `Reply` if malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise refuse(400, 'the body must be JSON: {"x": [{...}, ...]}') from None
    probes = doc.get("x") if isinstance(doc, dict) else None
    if not isinstance(probes, list) or len(probes) > MAX_PROBES:
        raise refuse(400, f"'x' must be a list of at most {MAX_PROBES} feature objects")
    try:
        return [records.features(x, limits) for x in probes]
    except records.BadEvent as exc:
        raise refuse(400, str(exc)) from None


class ScoringView(PartitionView):
    """Scores probes with a partition's champion, here or at the partition's owner."""

    async def score(self, request: Request, p: int, body: bytes) -> aioweb.Response:
        """Body {"x": [{feature: value, ...}, ...]} -> {"predictions": [...], "model": ...}."""
        forwarded = await self.at_owner(request, p, "POST", f"/models/{p}/predict", body)
        if forwarded is not None:
            return forwarded.relayed()
        context = self.context(request)
        features = parse_probes(body, context.limits)
        state = context.serving.states.get(p)
        if state is None:
            raise refuse(503, f"partition {p} is being moved; retry shortly")

        def predict(x: dict[str, records.Feature]) -> dict[str, Any]:
            state.schema.check_features(x)  # a feature of another kind than the partition learned
            return state.predict(x)

        async with context.scoring:
            version = state.version()
            try:
                predictions = await score_in_slices(predict, features)
            except ModelError as exc:
                raise refuse(422, str(exc)) from None
        return json_response({"predictions": predictions, "model": version})


class PartitionPredict(ScoringView):
    """Score feature sets with one partition's model, without learning."""

    async def post(self, request: Request, partition: str) -> aioweb.Response:
        p = self.partition(self.context(request), partition)
        return await self.score(request, p, await cast(aioweb.Request, request).read())


class Predict(ScoringView):
    """Score one event by key, with the model of the key's partition, wherever it lives.

    Body: {"key": "...", "x": {feature: value, ...}}; it never learns.
    """

    async def post(self, request: Request) -> aioweb.Response:
        try:
            doc = orjson.loads(await cast(aioweb.Request, request).read())
        except orjson.JSONDecodeError:
            raise refuse(400, 'the body must be JSON: {"key": "...", "x": {...}}') from None
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
            raise refuse(400, "'key' must be a string (the key the producers use)")
        if not isinstance(doc.get("x"), dict):
            raise refuse(400, "'x' must be an object of features")
        context = self.context(request)
        p = partition_of(doc["key"], context.settings.partitions)
        answer = await self.score(request, p, orjson.dumps({"x": [doc["x"]]}))
        if answer.status != 200:
            return answer
        try:
            scored = orjson.loads(cast(bytes, answer.body))
            prediction, model = scored["predictions"][0], scored["model"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise refuse(
                503, f"partition {p}: its owner answered something that is not predictions"
            ) from None
        served_here = p in context.serving.states
        return json_response(
            {
                "key": doc["key"],
                "partition": p,
                "owner": context.cluster.me if served_here else context.cluster.owners().get(p),
                "prediction": prediction,
                "model": model,
            }
        )
