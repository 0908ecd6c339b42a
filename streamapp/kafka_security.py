"""Kafka security from STREAMAPP_* settings: TLS and SASL (PLAIN, SCRAM) for a managed Kafka.

Why one module: Faust's clients (its consumer, both producers, the topic creation they do) and
streamapp's own (the admin client of `create-topics`, the producer of `streamapp produce`) must
connect the same way, and the password must reach them without passing through anything that
prints. It leaves `Settings.sasl_password` (a masked `Secret`) only here, into the client's
arguments.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from faust.types.auth import CredentialsT

from streamapp.settings import PREFIX, ConfigError, Settings

log = logging.getLogger(__name__)


def bootstrap_servers(broker: str) -> list[str]:
    """Faust's 'kafka://h:p;kafka://h2:p' as aiokafka's ['h:p', 'h2:p']."""
    return [url.split("://", 1)[-1] for url in broker.split(";")]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None otherwise): the brokers' certificates are
    verified, host name included, against STREAMAPP_SSL_CAFILE or else the system's CAs (which
    is what Confluent Cloud, MSK and other public-CA services need)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{PREFIX}SSL_CAFILE={settings.ssl_cafile!r} holds no usable PEM CA certificate ({exc})"
        ) from None
    if settings.ssl_certfile:
        try:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{PREFIX}SSL_CERTFILE={settings.ssl_certfile!r} / {PREFIX}SSL_KEYFILE="
                f"{settings.ssl_keyfile!r}: not a PEM certificate with its unencrypted key ({exc})"
            ) from None
    return context


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials`: Faust hands them to its consumer and producers (and through
    them to topic creation). SASLCredentials means SASL_SSL when it has a TLS context, else
    SASL_PLAINTEXT; its mechanism is passed to aiokafka as is, SCRAM included."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.reveal(),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_auth(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client streamapp makes itself (admin, producer)."""
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.reveal()
    return kwargs


@asynccontextmanager
async def consumer(settings: Settings, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer of the deployment's brokers with its credentials, for the commands that
    read topics themselves (replay, snapshots check, switch); it commits nothing by itself."""
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        enable_auto_commit=False,
        **options,
        **aiokafka_auth(settings),
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def describe(settings: Settings) -> str:
    """How the clients connect, for the log: never the password."""
    parts = [settings.security_protocol]
    if settings.security_protocol.startswith("SASL_"):
        parts.append(f"{settings.sasl_mechanism} as user {settings.sasl_username!r}")
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        parts.append(f"CAs from {settings.ssl_cafile}" if settings.ssl_cafile else "the system's CAs")
        if settings.ssl_certfile:
            parts.append(f"client certificate {settings.ssl_certfile}")
    return ", ".join(parts)


class KafkaAccessError(ConfigError):
    """The brokers refused the configured credentials or TLS: a setting to fix, not a fault to retry."""


async def check_access(settings: Settings, timeout: float = 20.0) -> None:
    """Connect and authenticate once to a bootstrap server, before any long-lived client starts.

    Why: aiokafka logs why a connection failed but raises only "Unable to bootstrap", and Faust
    then stops with a traceback of its services. A refused password, an unknown mechanism or an
    untrusted certificate is a setting to fix: this says which one. Only those fail here;
    unreachable brokers are left to the clients' own retries and errors, as without TLS or SASL.
    """
    if settings.security_protocol == "PLAINTEXT":
        return
    auth = aiokafka_auth(settings)
    for server in bootstrap_servers(settings.broker):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **auth), timeout
            )
        except SaslAuthenticationFailed as exc:
            raise KafkaAccessError(
                f"Kafka authentication failed at {server}: the broker refused user "
                f"{settings.sasl_username!r} with SASL {settings.sasl_mechanism} ({_reason(exc)}). Check "
                f"{PREFIX}SASL_USERNAME, {PREFIX}SASL_PASSWORD and {PREFIX}SASL_MECHANISM "
                "(Confluent Cloud: PLAIN with an API key and its secret)"
            ) from None
        except UnsupportedSaslMechanismError as exc:
            raise KafkaAccessError(
                f"Kafka authentication failed at {server}: the listener does not offer SASL "
                f"{settings.sasl_mechanism} ({_reason(exc)}); set {PREFIX}SASL_MECHANISM to one it "
                "enables (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise KafkaAccessError(
                f"TLS to Kafka at {server} failed: the broker's certificate did not verify "
                f"({exc.verify_message}); set {PREFIX}SSL_CAFILE to the CA that signed it and "
                "give the brokers by a name their certificate lists"
            ) from None
        except ssl.SSLError as exc:
            raise KafkaAccessError(
                f"TLS to Kafka at {server} failed ({exc}): is it a TLS listener? Check the port in "
                f"{PREFIX}BROKER and {PREFIX}SECURITY_PROTOCOL={settings.security_protocol}"
            ) from None
        except (OSError, KafkaError) as exc:  # TimeoutError is an OSError
            hint = " (a non-TLS listener closes TLS connections like this)" if "ssl_context" in auth else ""
            log.warning("streamapp: could not check the credentials at %s: %r%s", server, exc, hint)
            continue
        conn.close()
        return


def _reason(exc: Exception) -> str:
    """The broker's own words, without aiokafka's '[Error 58] SaslAuthenticationFailed: ' prefix."""
    return str(exc).split(": ", 1)[-1]


async def preflight(settings: Settings) -> None:
    """Before any Kafka client of the worker starts: refused credentials or an untrusted
    certificate stop it with what to fix, instead of aiokafka's "Unable to bootstrap" under a
    traceback of Faust's services."""
    log.info("streamapp: Kafka %s, %s", settings.broker, describe(settings))
    try:
        await check_access(settings)
    except KafkaAccessError as exc:
        log.critical("streamapp: %s; stopping the worker", exc)
        raise SystemExit(f"streamapp: {exc}") from None
