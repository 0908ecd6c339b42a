"""Who may call what: the three access levels of the web views and the check of each.

* OPEN: probes and documents (`/health`, `/ready`, `/metrics`, `/openapi.json`, the dashboard
  page itself, which asks for the read token when its data needs one).
* READ: scoring and model internals. Open unless STREAMAPP_READ_TOKEN is set; then either token
  (read or API) is accepted.
* CHANGE: promotions, rollbacks, snapshot downloads, explanations of past decisions (they show
  a past event's features, the data of the log): the API token (STREAMAPP_API_TOKEN); refused
  with 403 while none is configured, so a forgotten token never leaves them open.

A request signed by another worker (streamapp/peers.py) passes READ and CHANGE in place of a
token: the worker that forwarded it checked the client's token first.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from streamapp.settings import Secret

OPEN = "open"
READ = "read"
CHANGE = "change"
LEVELS = (OPEN, READ, CHANGE)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request is refused, as an HTTP status and a reason."""

    status: int
    reason: str


def _bearer(headers: Mapping[str, str]) -> bytes | None:
    """The header's bytes as sent, or None when there is none or it cannot be a token.

    aiohttp decodes header bytes that are not UTF-8 as surrogates, which do not encode back:
    such a header is a wrong token (401), not a server error.
    """
    given = headers.get("Authorization")
    if given is None:
        return None
    try:
        return given.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _matches(given: bytes | None, token: Secret) -> bool:
    if not token or given is None:
        return False
    return hmac.compare_digest(given, f"Bearer {token.reveal()}".encode())


class Tokens:
    """The bearer-token side of the levels (the peer side is the guard's: streamapp/web/middleware.py)."""

    def __init__(self, read_token: Secret, api_token: Secret) -> None:
        self.read_token = read_token
        self.api_token = api_token

    def check(self, level: str, headers: Mapping[str, str], peer: bool) -> Refused | None:
        """None when a request of `level` with these headers may proceed, else why not.

        `peer`: the request carries a valid worker signature (verified by the caller).
        """
        if level == OPEN:
            return None
        if level == CHANGE and not self.api_token:
            return Refused(403, "refused: set STREAMAPP_API_TOKEN on the workers to enable this endpoint")
        if peer:
            return None
        given = _bearer(headers)
        if level == READ:
            if not self.read_token or _matches(given, self.read_token) or _matches(given, self.api_token):
                return None
            return Refused(
                401,
                "a valid 'Authorization: Bearer <STREAMAPP_READ_TOKEN or STREAMAPP_API_TOKEN>' "
                "header is required",
            )
        if _matches(given, self.api_token):
            return None
        return Refused(401, "a valid 'Authorization: Bearer <STREAMAPP_API_TOKEN>' header is required")
