"""Worker-to-worker requests: who owns which partition, which advertised URLs may be contacted,
and the signature a forwarded request carries instead of the client's token.

A worker forwards a client's request for a partition it does not serve to the partition's owner,
the URL that owner advertised in the consumer group's metadata. Anything that can join the group
can advertise anything, so a worker

* contacts only URLs that fully match STREAMAPP_PEER_URL_PATTERN (the rest are reported as
  unavailable owners, with the reason, and never contacted),
* never sends the client's `Authorization` header anywhere: it checks the token itself, then
  signs the forwarded request with the workers' shared key (purpose `signing.PEER`) over the
  method, the path with its query, a SHA-256 of the body, a time and a nonce,
* follows no redirect (a redirect would carry the signature to another host).

The owner accepts a valid signature in place of a token, refuses one more than MAX_SKEW seconds
off its own clock, and refuses a nonce it has already seen (a captured request replayed within
its lifetime).
"""

from __future__ import annotations

import collections
import hashlib
import re
import secrets
import time
from collections.abc import Mapping

import aiohttp
import faust
from yarl import URL

from streamapp.signing import PEER, Signer

#: seconds a signed peer request stays valid either side of the receiver's clock
MAX_SKEW = 30.0
PEER_TIME = "X-Streamapp-Peer-Time"
PEER_NONCE = "X-Streamapp-Peer-Nonce"
PEER_SIGNATURE = "X-Streamapp-Peer-Signature"
#: the header earlier versions marked forwarded requests with: a claim to be a peer, like the others
LEGACY_FORWARDED = "X-Streamapp-Forwarded"
PEER_HEADERS = (PEER_TIME, PEER_NONCE, PEER_SIGNATURE, LEGACY_FORWARDED)
PEER_TIMEOUT = 5.0
#: largest answer read from a peer (a snapshot is the largest thing a worker serves)
MAX_ANSWER_BYTES = 80 * 1024 * 1024
_NONCE = re.compile("[0-9a-f]{32}")
_TIME = re.compile("[0-9]{1,12}")
_SIGNATURE = re.compile("[0-9a-f]{64}")


class NotContacted(Exception):
    """The owner's advertised URL is not one this worker may send requests to."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign_request(
    signer: Signer, method: str, path_qs: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers that make a request to `path_qs` (path and query as sent) a peer's."""
    at = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    mac = signer.sign(PEER, method.upper(), path_qs, body_digest(body), at, nonce)
    return {PEER_TIME: at, PEER_NONCE: nonce, PEER_SIGNATURE: mac.hex()}


class PeerVerifier:
    """Checks signed peer requests; remembers the nonces of the last 2 x MAX_SKEW seconds."""

    def __init__(self, signer: Signer, max_nonces: int = 200_000) -> None:
        self.signer = signer
        self.max_nonces = max_nonces
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    @staticmethod
    def claims_peer(headers: Mapping[str, str]) -> bool:
        """The request says it comes from a worker: it must then prove it."""
        return any(name in headers for name in PEER_HEADERS)

    def verify(
        self, method: str, path_qs: str, body: bytes, headers: Mapping[str, str], now: float | None = None
    ) -> str | None:
        """None when the request is a valid peer request, else why it is refused."""
        now = time.time() if now is None else now
        at, nonce, mac = (headers.get(name, "") for name in (PEER_TIME, PEER_NONCE, PEER_SIGNATURE))
        if not (_TIME.fullmatch(at) and _NONCE.fullmatch(nonce) and _SIGNATURE.fullmatch(mac)):
            names = f"{PEER_TIME}, {PEER_NONCE} and {PEER_SIGNATURE}"
            return f"a worker-to-worker request needs valid {names} headers"
        if abs(now - int(at)) > MAX_SKEW:
            return (
                f"worker-to-worker request signed at {at}, more than {MAX_SKEW:g} s from this worker's clock"
            )
        if not self.signer.verify(
            bytes.fromhex(mac), PEER, method.upper(), path_qs, body_digest(body), at, nonce
        ):
            return "worker-to-worker request with an invalid signature (altered, or another key)"
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return "worker-to-worker request replayed (its nonce was already used)"
        if len(self._seen) >= self.max_nonces:
            return "too many worker-to-worker requests in the last minute; retry shortly"
        self._seen[nonce] = now + 2 * MAX_SKEW
        return None


class Peers:
    """Who serves which partition (as of the last rebalance), and how to ask them."""

    def __init__(self, app: faust.App, changelog_topic: str, signer: Signer, url_pattern: str) -> None:
        self.app = app
        self.changelog_topic = changelog_topic
        self.signer = signer
        self.url_pattern = re.compile(url_pattern)

    @property
    def me(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def owners(self) -> dict[int, str]:
        """{partition: worker URL} of the active partitions the group leader last assigned."""
        owners = {}
        for url, topics in self.app.assignor.table_metadata(self.changelog_topic).items():
            for partition in topics.get(self.changelog_topic, ()):
                owners[partition] = str(url).rstrip("/")
        return owners

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be contacted, or None when it may."""
        if not self.url_pattern.fullmatch(url):
            return f"its advertised URL {url!r} does not match STREAMAPP_PEER_URL_PATTERN: not contacted"
        return None

    async def ask(
        self,
        url: str,
        method: str,
        path_qs: str,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of another worker's answer to a signed request.

        Raises NotContacted for a URL outside the pattern, aiohttp.ClientError or TimeoutError
        when there is no (complete) answer. The request carries no Authorization header.
        """
        refused = self.refusal(url)
        if refused is not None:
            raise NotContacted(refused)
        try:
            target = URL(url + path_qs, encoded=True)
        except ValueError as exc:
            raise NotContacted(f"its advertised URL {url!r} is not a URL ({exc})") from None
        data = body or b""
        headers = sign_request(self.signer, method, path_qs, data)
        if body is not None:
            headers["Content-Type"] = "application/json"
        session: aiohttp.ClientSession = self.app.http_client
        limit = aiohttp.ClientTimeout(total=PEER_TIMEOUT if timeout is None else timeout)
        request = session.request(
            method, target, data=data if body is not None else None, headers=headers, timeout=limit,
            allow_redirects=False,
        )  # fmt: skip
        async with request as answer:
            content = bytearray()
            async for chunk in answer.content.iter_any():
                content += chunk
                if len(content) > MAX_ANSWER_BYTES:
                    raise aiohttp.ClientPayloadError(f"answer over {MAX_ANSWER_BYTES} bytes")
            return answer.status, bytes(content), answer.content_type
