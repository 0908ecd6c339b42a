"""A Confluent-compatible Schema Registry client (Confluent's, Confluent Cloud's, Apicurio's
/apis/ccompat/v7): the three calls streamapp makes, asynchronous, on aiohttp.

Why not confluent-kafka's SchemaRegistryClient: it is synchronous (a lookup would stall the
worker's event loop, and with it every partition and the heartbeats), and it comes with
librdkafka, a second Kafka client the worker never uses. The calls are few: a schema by id,
registering a subject's version, checking the registry at start. Caching is the decoder's
(streamapp/decoding.py): a schema id names one schema for good, so an answer is kept forever.

Basic auth as Confluent Cloud uses it (the registry's API key and secret), only over https
(checked in settings); TLS with the system CAs or STREAMAPP_SCHEMA_REGISTRY_CAFILE.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from streamapp.settings import Secret

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_ANSWER_BYTES = 4 * 2**20  # a schema is kilobytes; a registry answering more is broken
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


class RegistryUnavailable(Exception):
    """The registry did not answer usefully (network, 5xx, refused credentials): try again later;
    the records waiting for it are neither applied nor dead-lettered meanwhile."""


@dataclass(frozen=True)
class RegisteredSchema:
    text: str
    schema_type: str  # AVRO, JSON or PROTOBUF


class SchemaRegistry:
    def __init__(
        self, url: str, username: str = "", password: Secret | None = None, cafile: str = ""
    ) -> None:
        self.url = url.rstrip("/")
        # Basic auth as a header (aiohttp deprecates its BasicAuth); never logged or shown.
        self._auth: dict[str, str] = {}
        if username and password:
            token = base64.b64encode(f"{username}:{password.reveal()}".encode()).decode()
            self._auth = {"Authorization": f"Basic {token}"}
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cafile or None) if cafile else True
        )
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SchemaRegistry:
        return cls(
            settings.schema_registry_url,
            settings.schema_registry_username,
            settings.schema_registry_password,
            settings.schema_registry_cafile,
        )

    async def schema(self, schema_id: int) -> RegisteredSchema | None:
        """The schema registered under `schema_id`; None when the registry has none."""
        status, doc = await self._call("GET", f"/schemas/ids/{schema_id}")
        if status == 404:
            return None
        self._expect(status, doc, f"schema id {schema_id}")
        if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
            raise RegistryUnavailable(f"the registry answered schema id {schema_id} without a schema")
        return RegisteredSchema(doc["schema"], str(doc.get("schemaType") or "AVRO"))

    async def register(self, subject: str, schema: str) -> int:
        """The id of `schema` as a version of `subject`, registering it if new (the registry
        refuses a version its compatibility rule forbids: ValueError with its message)."""
        body = orjson.dumps({"schema": schema, "schemaType": "AVRO"})
        status, doc = await self._call("POST", f"/subjects/{subject}/versions", body)
        if status in (409, 422):
            message = doc.get("message") if isinstance(doc, dict) else doc
            raise ValueError(f"the registry refused the schema for subject {subject!r} ({status}): {message}")
        self._expect(status, doc, f"subject {subject!r}")
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), int):
            raise RegistryUnavailable(f"the registry registered {subject!r} without answering an id")
        return int(doc["id"])

    async def check(self) -> None:
        """At start: the URL is a registry and it takes the credentials (RegistryUnavailable says why)."""
        status, doc = await self._call("GET", "/subjects")
        self._expect(status, doc, "the list of subjects")
        if not isinstance(doc, list):
            raise RegistryUnavailable(
                f"{self.url}/subjects is not a list of subjects: is the URL the registry's API "
                "(Apicurio: .../apis/ccompat/v7)?"
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        headers = {"Accept": CONTENT_TYPE, **self._auth}
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        try:
            async with self._session.request(
                method, self.url + path, data=body, headers=headers, ssl=self._ssl, allow_redirects=False
            ) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(f"schema registry {self.url}: {type(exc).__name__}: {exc}") from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise RegistryUnavailable(
                f"schema registry {self.url}{path}: an answer over {MAX_ANSWER_BYTES} bytes"
            )
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return status, raw[:200].decode(errors="replace")

    def _expect(self, status: int, doc: Any, what: str) -> None:
        if status in (401, 403):
            raise RegistryUnavailable(
                f"schema registry {self.url} refused the credentials for {what} ({status}): check "
                "STREAMAPP_SCHEMA_REGISTRY_USERNAME and _PASSWORD"
            )
        if status != 200:
            message = doc.get("message") if isinstance(doc, dict) else doc
            raise RegistryUnavailable(f"schema registry {self.url}: {what}: {status} {message}"[:500])
