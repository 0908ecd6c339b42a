"""A partition's kept snapshots: their list (what a rollback can return to) and the download of
one as written (API token: it is the model). Nothing that arrives over HTTP is ever unpickled."""

from __future__ import annotations

import re

from aiohttp import web as aioweb
from faust.web import Request

from streamapp.web.base import PartitionView, json_response, parse_number, refuse

_DISPOSITION = re.compile('attachment; filename="[A-Za-z0-9._-]{1,200}"')


class Snapshots(PartitionView):
    """The partition's kept snapshots (headers only): what a rollback can return to."""

    async def get(self, request: Request, partition: str) -> aioweb.Response:
        p = await self.served_here(request, partition, "/models/{p}/snapshots")
        kept = [
            {
                "seq": h.seq,
                "offset": h.offset,
                "created": h.created,
                "bytes": h.payload_bytes,
                "models": h.models,
            }
            for h in self.context(request).serving.kept_headers(p)
        ]
        return json_response({"partition": p, "snapshots": kept})


class Snapshot(PartitionView):
    """A kept snapshot as written, the newest or ?seq=N (API token: it is the model)."""

    async def get(self, request: Request, partition: str) -> aioweb.Response:
        raw = request.query.get("seq")
        seq = None if raw is None else parse_number(raw)
        if raw is not None and seq is None:
            raise refuse(400, f"seq must be a snapshot number (digits 0-9), got {raw!r}")
        context = self.context(request)
        p = self.partition(context, partition)
        name = f"{context.settings.app_id}-p{p}-snapshot{{}}.bin"
        query = "" if seq is None else f"?seq={seq}"
        forwarded = await self.at_owner(request, p, "GET", f"/models/{p}/snapshot{query}")
        if forwarded is not None and forwarded.status == 200:
            disposition = f'attachment; filename="{name.format(seq or "")}"'
            return self.download(forwarded.body, disposition)
        if forwarded is not None:
            return forwarded.relayed()
        kept = context.serving.kept_snapshots(p)
        chosen = [(h, blob) for h, blob in kept if seq is None or h.seq == seq]
        if not chosen:
            raise refuse(
                404, f"partition {p} keeps no snapshot {seq or ''} (kept: {[h.seq for h, _ in kept]})"
            )
        header, blob = chosen[0]
        disposition = f'attachment; filename="{name.format(header.seq)}"'
        if not _DISPOSITION.fullmatch(disposition):  # an app id with quotes or spaces
            disposition = f'attachment; filename="p{p}-snapshot{header.seq}.bin"'
        return self.download(blob, disposition)

    @staticmethod
    def download(blob: bytes, disposition: str) -> aioweb.Response:
        return aioweb.Response(
            body=blob, content_type="application/octet-stream", headers={"Content-Disposition": disposition}
        )
