"""The live dashboard: one self-contained page (no CDN, works offline) under a strict
Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web as aioweb
from faust.web import Request

from streamapp.web.base import WebView


def content_security_policy(page: str) -> str:
    """The dashboard may run its own script and nothing else: no inline event handler, no other
    script, no request but to its worker. A second line of defence: the page already sets every
    string it did not write as text, never as markup."""
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


PAGE = resources.files("streamapp").joinpath("dashboard.html").read_text()
POLICY = content_security_policy(PAGE)


class Dashboard(WebView):
    """The live dashboard. The page is open; the data it polls (/models) needs the read token
    when one is set, which it asks for."""

    async def get(self, request: Request) -> aioweb.Response:
        return aioweb.Response(
            text=PAGE, content_type="text/html", headers={"Content-Security-Policy": POLICY}
        )
