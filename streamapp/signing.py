"""HMAC-SHA256 signatures with STREAMAPP_SIGNING_KEY: who may change a partition.

Three things are signed with the workers' shared key, each under its own purpose so that a
signature made for one can never pass as another: snapshots (before anything is unpickled),
control events (promote, rollback; written by the web views into the events topic, which every
producer may write) and worker-to-worker requests (so a worker never forwards a client's token).

Every signature also covers the app id (STREAMAPP_APP_ID), so two deployments that share a key
still cannot pass each other's snapshots or requests. Fields are length-prefixed before they are
hashed: ("ab", "c") and ("a", "bc") sign differently.
During a key rotation STREAMAPP_SIGNING_KEY_PREVIOUS still verifies, never signs.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable

from streamapp.settings import PREFIX, ConfigError, Secret, Settings

Field = bytes | bytearray | memoryview | str | int | float | None

SNAPSHOT = "snapshot"
CONTROL = "control"
PEER = "peer"
_LENGTH = struct.Struct(">Q")


def _chunks(purpose: str, fields: Iterable[Field]) -> Iterable[bytes | bytearray | memoryview]:
    for value in (purpose, *fields):
        if value is None:
            data: bytes | bytearray | memoryview = b"\x00none"
        elif isinstance(value, bytes | bytearray | memoryview):
            data = value
        else:
            data = str(value).encode()
        yield _LENGTH.pack(len(data))
        yield data


class Signer:
    """Signs with the current key; verifies with the current and the previous one."""

    def __init__(self, key: Secret, previous: Secret | None = None, app: str = "") -> None:
        if not key:
            raise ConfigError(
                f"{PREFIX}SIGNING_KEY is not set: workers sign their snapshots, control events and "
                "requests to each other with it. Give every worker the same secret of 32+ "
                "characters (python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        self._app = app
        self._keys = [key.reveal().encode()]
        if previous:
            self._keys.append(previous.reveal().encode())

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        return cls(settings.signing_key, settings.signing_key_previous, settings.app_id)

    def _mac(self, key: bytes, purpose: str, fields: Iterable[Field]) -> bytes:
        mac = hmac.new(key, digestmod=hashlib.sha256)
        for chunk in _chunks(purpose, (self._app, *fields)):
            mac.update(chunk)
        return mac.digest()

    def sign(self, purpose: str, *fields: Field) -> bytes:
        """The 32-byte signature of `fields` for `purpose`, with the current key."""
        return self._mac(self._keys[0], purpose, fields)

    def verify(self, signature: bytes, purpose: str, *fields: Field) -> bool:
        """Constant-time check against each accepted key."""
        return any(hmac.compare_digest(signature, self._mac(key, purpose, fields)) for key in self._keys)
