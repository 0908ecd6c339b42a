"""The models: every partition of the cluster (/models), this worker's (/models/local), and one
partition in detail (/models/{partition}).

Any worker answers for the whole cluster: it asks the owner of each partition (from the group's
last assignment, which every member receives) for what it serves, and says which partitions are
unknown and why instead of failing the page.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web as aioweb
from faust.web import Request

from streamapp import seam
from streamapp.histogram import BUCKETS
from streamapp.web.base import PartitionView, WebView, ask, json_response
from streamapp.web.context import WebContext


def partition_summary(context: WebContext, partition: int, now: float) -> dict[str, Any]:
    """A served partition's summary, with its lag and, once it has some, its latencies."""
    summary = context.serving.states[partition].summary(now)
    summary["lag"] = context.lag(partition)
    timing = context.serving.timings.get(partition)
    if timing is not None:
        summary["predictions"] = timing.predictions
        summary["alerts"] = timing.alerts
        summary["latency"] = {
            "predict": timing.predict.counts,
            "learn": timing.learn.counts,
            "end_to_end": timing.end_to_end.counts,
        }
    return summary


def local(context: WebContext) -> dict[str, Any]:
    """This worker, whether it is ready, and the summary of every partition it serves."""
    now = time.time()
    partitions = [partition_summary(context, p, now) for p in sorted(context.serving.states)]
    is_ready, why = context.ready()
    return {"worker": context.cluster.me, "ready": is_ready, "state": why, "partitions": partitions}


def local_answer(content: bytes, partitions: int) -> dict[str, Any] | None:
    """A peer's /models/local, keeping only well-formed partitions; None if malformed."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("partitions"), list):
        return None
    doc["partitions"] = [
        s
        for s in doc["partitions"]
        if isinstance(s, dict) and type(s.get("partition")) is int and 0 <= s["partition"] < partitions
    ]
    return doc


async def gather_workers(context: WebContext, urls: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """({url: its /models/local} of this worker and of every other that answered, {url: why not})."""
    answers = await asyncio.gather(
        *(ask(context.cluster, url, "GET", "/models/local", None, None) for url in urls)
    )
    workers: dict[str, dict[str, Any]] = {context.cluster.me: local(context)}
    problems: dict[str, str] = {}
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, str):
            problems[url] = answer
        elif answer.status != 200:
            problems[url] = f"answered {answer.status}"
        elif (doc := local_answer(answer.body, context.settings.partitions)) is None:
            problems[url] = "answered something that is not its partitions"
        else:
            workers[url] = doc
    return workers, problems


def cluster_partitions(
    partitions: int, owners: dict[int, str], workers: dict[str, Any], problems: dict[str, str]
) -> list[dict[str, Any]]:
    """Every partition: served (by its owner, as that owner says) or unavailable, with why."""
    served = {s["partition"]: (url, s) for url, w in workers.items() for s in w["partitions"]}
    out = []
    for partition in range(partitions):
        owner = owners.get(partition)
        if partition in served and (owner is None or served[partition][0] == owner):
            url, summary = served[partition]
            out.append({**summary, "owner": url, "status": "served"})
            continue
        if owner is None:
            reason = "no worker owns it (the group is rebalancing)"
        elif owner in problems:
            reason = f"its owner: {problems[owner]}"
        else:
            reason = f"its owner {owner!r} is recovering it"
        out.append({"partition": partition, "owner": owner, "status": "unavailable", "reason": reason})
    return out


class LocalModels(WebView):
    """The partitions this worker serves (what /models gathers from every worker)."""

    async def get(self, request: Request) -> aioweb.Response:
        return json_response({**local(self.context(request)), "buckets": BUCKETS})


class Models(WebView):
    """Every partition of the cluster, with its owner; unknown ones say why."""

    async def get(self, request: Request) -> aioweb.Response:
        context = self.context(request)
        me = context.cluster.me
        owners = context.cluster.owners()
        workers, problems = await gather_workers(context, sorted(set(owners.values()) - {me}))
        partitions = cluster_partitions(context.settings.partitions, owners, workers, problems)
        return json_response(
            {
                "worker": me,
                "time": time.time(),
                "buckets": BUCKETS,
                "workers": {
                    **{url: {"ok": True, "ready": w.get("ready") is True} for url, w in workers.items()},
                    **{url: {"ok": False, "error": problem} for url, problem in problems.items()},
                },
                "partitions": partitions,
            }
        )


class Model(PartitionView):
    """One partition in detail: its summary, the model's parameters and size."""

    async def get(self, request: Request, partition: str) -> aioweb.Response:
        context = self.context(request)
        p = await self.served_here(request, partition, "/models/{p}")
        state = context.serving.states[p]
        detail = partition_summary(context, p, time.time())
        detail.update(
            worker=context.cluster.me,
            parameters=seam.model_parameters(state.model),
            memory_bytes=seam.model_memory_bytes(state.model),
            snapshot_download=f"/models/{p}/snapshot",
        )
        return json_response(detail)
