"""Configuration: one place that reads STREAMAPP_* environment variables and validates them.

Bad configuration must fail at start with a message that says what to fix, so every value is
parsed and range-checked here, before Faust or Kafka are touched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from streamapp import snapshot_child

PREFIX = "STREAMAPP_"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable and what is accepted."""


def _whole_number(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{PREFIX}{name}={raw!r} must be at least {minimum}")
        return value

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _finite_number(zero_allowed: bool) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from None
        if not (value >= 0 if zero_allowed else value > 0) or value == float("inf"):
            bound = "a finite number, 0 or more" if zero_allowed else "a positive, finite number"
            raise ConfigError(f"{PREFIX}{name}={raw!r} must be {bound}")
        return value

    return parse


_positive_float = _finite_number(zero_allowed=False)
_non_negative_float = _finite_number(zero_allowed=True)


def _topic_name(name: str, raw: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not raw or len(raw) > 249 or not set(raw) <= allowed:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is not a valid Kafka topic name "
            "(1-249 characters of letters, digits, '.', '_' and '-')"
        )
    return raw


def _broker(name: str, raw: str) -> str:
    urls = [u.strip() for u in raw.split(";") if u.strip()]
    if not urls:
        raise ConfigError(f"{PREFIX}{name} is empty: give host:port, e.g. kafka://127.0.0.1:9092")
    for url in urls:
        hostport = url.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"{PREFIX}{name}={raw!r}: {url!r} is not host:port (e.g. kafka://127.0.0.1:9092)"
            )
    return ";".join(u if "://" in u else f"kafka://{u}" for u in urls)


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{PREFIX}{name} is empty")
    return raw.strip()


def _optional_text(name: str, raw: str) -> str:
    return raw.strip()


def _choice(allowed: tuple[str, ...], upper: bool = False) -> Callable[[str, str], str]:
    """One of `allowed`; with `upper`, in any case and surrounding spaces (Kafka's own names)."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw
        if value not in allowed:
            raise ConfigError(f"{PREFIX}{name}={raw!r} is not one of {', '.join(allowed)}")
        return value

    return parse


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A value that prints masked: reprs, str(), f-strings, logs and `streamapp settings` show
    '********'; only `reveal()` gives it, at the one place that hands it to the Kafka client."""

    __slots__ = ("_value",)
    MASK = "********"

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return self.MASK if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _secret(name: str, raw: str) -> Secret:
    # A trailing newline is an artefact of `echo` or a secret file, never part of a password.
    return Secret(raw.rstrip("\r\n"))


def _strong_secret(minimum: int) -> Callable[[str, str], Secret]:
    """A secret that guards something (an HMAC key, a bearer token): empty (off) or long enough
    that guessing it is hopeless. The message never shows the value."""

    def parse(name: str, raw: str) -> Secret:
        secret = _secret(name, raw)
        value = secret.reveal()
        if value and (len(value) < minimum or value != value.strip()):
            raise ConfigError(
                f"{PREFIX}{name} must be at least {minimum} characters without surrounding spaces "
                f"(it has {len(value)}); generate one with: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )
        return secret

    return parse


def _finite_bound(name: str, raw: str) -> float:
    value = _positive_float(name, raw)
    if value > 1e150:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is too large: River's statistics square the values and "
            "overflow past about 1e154; keep it at or below 1e150"
        )
    return value


def _pattern(name: str, raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a regular expression: {exc}") from None
    return raw


def _model_list(name: str, raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if len(set(names)) != len(names):
        raise ConfigError(f"{PREFIX}{name}={raw!r} names a model twice")
    return names


def _field_path(name: str, raw: str) -> str:
    """A dotted path to a field of a (nested) record: 'device.os'."""
    value = raw.strip()
    if not value or any(not part for part in value.split(".")) or "*" in value:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is not a field path: names joined by '.', e.g. card_id or device.os"
        )
    return value


def _optional_path(name: str, raw: str) -> str:
    return _field_path(name, raw) if raw.strip() else ""


def _path_list(name: str, raw: str) -> tuple[str, ...]:
    paths = tuple(_field_path(name, part) for part in raw.split(",") if part.strip())
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{PREFIX}{name}={raw!r} names a field twice")
    return paths


def _feature_list(name: str, raw: str) -> tuple[str, ...]:
    """Field paths, each maybe ending in '.*' (every field of that object, by its own name)."""
    entries = []
    for part in (p.strip() for p in raw.split(",")):
        if part:
            spread = part.endswith(".*")
            path = _field_path(name, part[:-2] if spread else part)
            entries.append(f"{path}.*" if spread else path)
    if len(set(entries)) != len(entries):
        raise ConfigError(f"{PREFIX}{name}={raw!r} names a field twice")
    return tuple(entries)


def _optional_topic(name: str, raw: str) -> str:
    return _topic_name(name, raw.strip()) if raw.strip() else ""


def _registry_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} is not an http(s) URL "
            "(e.g. https://psrc-xxxxx.europe-west3.gcp.confluent.cloud)"
        )
    return value


def _setting(default: str, parse: Callable[[str, str], Any], doc: str) -> Any:
    return field(default=parse("", default), metadata={"raw_default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob of streamapp; docs/configuration.md is generated from these (tools/config_doc.py)."""

    broker: str = _setting("kafka://127.0.0.1:9092", _broker, "Kafka bootstrap servers, ';'-separated.")
    app_id: str = _setting("streamapp", _topic_name, "Faust app id: consumer group and table prefix.")
    events_topic: str = _setting("events", _topic_name, "Topic the events and labels arrive on.")
    predictions_topic: str = _setting("predictions", _topic_name, "Topic the predictions go to.")
    deadletter_topic: str = _setting("deadletter", _topic_name, "Topic refused events go to.")
    partitions: int = _setting("8", _positive_int, "Partitions of the events topic (and of the tables).")
    replication_factor: int = _setting("1", _positive_int, "Replication factor of topics streamapp creates.")
    # Kafka security (managed Kafka: SASL_SSL); streamapp/kafka_security.py hands these to every client.
    security_protocol: str = _setting(
        "PLAINTEXT",
        _choice(SECURITY_PROTOCOLS, upper=True),
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (managed Kafka such as Confluent Cloud: SASL_SSL).",
    )
    sasl_mechanism: str = _setting(
        "PLAIN",
        _choice(SASL_MECHANISMS, upper=True),
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols).",
    )
    sasl_username: str = _setting("", _optional_text, "SASL user name (Confluent Cloud: the API key).")
    # Secret is immutable, like the str and int defaults ruff knows.
    sasl_password: Secret = _setting(  # noqa: RUF009
        "", _secret, "SASL password (Confluent Cloud: the API secret); always shown masked."
    )
    ssl_cafile: str = _setting(
        "", _optional_text, "PEM file of the CA(s) that signed the brokers' certificates; empty: system CAs."
    )
    ssl_certfile: str = _setting(
        "", _optional_text, "PEM client certificate for mutual TLS (SSL, SASL_SSL); may hold the key too."
    )
    ssl_keyfile: str = _setting(
        "", _optional_text, "PEM private key (unencrypted) of STREAMAPP_SSL_CERTFILE, if not in that file."
    )
    model: str = _setting(
        "hoeffding_tree", _text, "A preset name or an import path 'package.module:factory'."
    )
    task: str = _setting(
        "auto",
        _choice(("auto", "binary", "multiclass", "regression", "anomaly")),
        "auto (from the model), binary, multiclass, regression or anomaly.",
    )
    key_field: str = _setting(
        "", _optional_text, "If set, repartition by this top-level field, else feature (unkeyed producers)."
    )
    # Records of the bank's own shape (streamapp/mapping.py); the defaults are streamapp's contract.
    input_format: str = _setting(
        "json",
        _choice(("json", "avro")),
        "json, or avro: Confluent's wire format, schemas from STREAMAPP_SCHEMA_REGISTRY_URL.",
    )
    output_format: str = _setting(
        "json",
        _choice(("json", "avro")),
        "Predictions as json, or avro (Confluent's wire format, schema registered under "
        "'<predictions topic>-value').",
    )
    id_field: str = _setting("id", _field_path, "Field of the event id (a dotted path into nested records).")
    label_field: str = _setting("y", _field_path, "Field of the label; absent or null: not labelled yet.")
    features: tuple[str, ...] = _setting(
        "x.*",
        _feature_list,
        "Comma-separated feature fields (dotted paths; 'P.*': every field of the object at P); "
        "empty: every field but the id, label, timestamp and STREAMAPP_EXCLUDE.",
    )
    exclude: tuple[str, ...] = _setting(
        "", _path_list, "Fields (dotted paths) never used as features when STREAMAPP_FEATURES is empty."
    )
    timestamp_field: str = _setting(
        "", _optional_path, "Field of the record time; empty: the Kafka timestamp."
    )
    timestamp_unit: str = _setting(
        "s", _choice(("s", "ms")), "Unit of a numeric STREAMAPP_TIMESTAMP_FIELD: s or ms since the epoch."
    )
    transform: str = _setting(
        "",
        _optional_text,
        "Import path 'package.module:function' of a pure function: decoded record -> record, "
        "applied before the mapping; empty: none.",
    )
    labels_topic: str = _setting(
        "",
        _optional_topic,
        "Topic of late labels (same partitions and key as the events); empty: labels on the events topic.",
    )
    schema_registry_url: str = _setting(
        "",
        _registry_url,
        "Confluent-compatible Schema Registry (Apicurio: .../apis/ccompat/v7); needed for avro.",
    )
    schema_registry_username: str = _setting(
        "", _optional_text, "Registry basic-auth user (Confluent Cloud: the registry API key)."
    )
    schema_registry_password: Secret = _setting(  # noqa: RUF009
        "", _secret, "Registry basic-auth password (Confluent Cloud: the API secret); shown masked."
    )
    schema_registry_cafile: str = _setting(
        "", _optional_text, "PEM file of the CA(s) of the registry's certificate; empty: system CAs."
    )
    anomaly_threshold: float = _setting(
        "0.9", _positive_float, "Anomaly scores at or above it are alerts in the prediction record."
    )
    drift_policy: str = _setting(
        "none",
        _choice(("none", "reset")),
        "On a detected drift: none (count it) or reset (a new model, same parameters).",
    )
    challengers: tuple[str, ...] = _setting(
        "", _model_list, "Comma-separated models (presets or import paths) scored beside the champion."
    )
    promote_after: int = _setting(
        "0", _non_negative_int, "Promotion rule: compare the models over this many last labels (0: off)."
    )
    promote_margin: float = _setting(
        "0.02",
        _non_negative_float,
        "Promotion rule: a challenger must lead by more than this (metric units).",
    )
    snapshots_kept: int = _setting(
        "3", _positive_int, "Snapshots kept per partition, for recovery and rollback."
    )
    snapshot_every_events: int = _setting(
        "5000", _positive_int, "Snapshot a partition after this many events applied..."
    )
    snapshot_every_seconds: float = _setting(
        "30", _positive_float, "...or when its last snapshot is this old (both spread by +-25%)."
    )
    snapshot_in: str = _setting(
        "auto",
        _choice(("auto", "child", "loop")),
        "Pickled in a forked child, on the loop, or auto (child from 1 MiB).",
    )
    rocksdb_memory_bytes: int = _setting(
        "67108864", _positive_int, "RocksDB memory of the worker (64 MiB), shared by all its partitions."
    )
    max_snapshot_bytes: int = _setting(
        "67108864", _positive_int, "Largest snapshot written (64 MiB); kept under the Kafka limits below."
    )
    kafka_max_message_bytes: int = _setting(
        "75497472", _positive_int, "Request, fetch, changelog and output max.message.bytes (72 MiB)."
    )
    max_event_bytes: int = _setting(
        "65536", _positive_int, "Larger event values (or keys with headers) go to the dead-letter topic."
    )
    max_features: int = _setting("1000", _positive_int, "Most features one event may have.")
    max_name_length: int = _setting(
        "256", _positive_int, "Longest feature name or string feature value, in characters."
    )
    max_abs_number: float = _setting(
        "1e15",
        _finite_bound,
        "Largest magnitude of a numeric feature or regression label (River overflows near 1e154).",
    )
    max_classes: int = _setting(
        "100", _positive_int, "Most distinct class labels a multiclass partition learns (binary: 2)."
    )
    pending_labels_max: int = _setting(
        "100000", _non_negative_int, "Events per partition kept waiting for a late label."
    )
    pending_labels_max_bytes: int = _setting(
        "16777216",
        _positive_int,
        "Bytes (of their JSON values) of the events per partition waiting for a label (16 MiB).",
    )
    pending_labels_max_age: float = _setting(
        "2592000",
        _non_negative_float,
        "Seconds (of record time) an event waits for its label (30 days); 0: no limit.",
    )
    datadir: str = _setting("data/worker", _text, "Worker data directory (RocksDB); one per worker.")
    web_bind: str = _setting("127.0.0.1", _text, "Address the web server binds to.")
    web_host: str = _setting("127.0.0.1", _text, "Host other workers use to reach this one's web views.")
    web_port: int = _setting("6066", _positive_int, "Port of the web views (one per worker).")
    # Secrets are immutable, like the str and int defaults ruff knows.
    api_token: Secret = _setting(  # noqa: RUF009
        "",
        _strong_secret(24),
        "Bearer token (24+ characters) for snapshot downloads and changes; empty: those are refused.",
    )
    read_token: Secret = _setting(  # noqa: RUF009
        "",
        _strong_secret(24),
        "Bearer token (24+ characters) for scoring and model internals; empty: those are open.",
    )
    signing_key: Secret = _setting(  # noqa: RUF009
        "",
        _strong_secret(32),
        "HMAC key (32+ characters) signing snapshots, control events and worker-to-worker requests; "
        "required by workers.",
    )
    signing_key_previous: Secret = _setting(  # noqa: RUF009
        "",
        _strong_secret(32),
        "The key before a rotation: still accepted, never used to sign; empty when not rotating.",
    )
    peer_url_pattern: str = _setting(
        r"http://127\.0\.0\.1:[0-9]+",
        _pattern,
        "Regular expression a worker URL must fully match to receive worker-to-worker requests.",
    )
    rollback_min_interval: float = _setting(
        "60",
        _non_negative_float,
        "Seconds (of record time) between two rollbacks of a partition; 0: no limit.",
    )
    standby_replicas: int = _setting("1", _non_negative_int, "Standby copies of each partition's state.")
    session_timeout: float = _setting(
        "10", _positive_float, "Seconds before the group gives a silent worker's partitions to others."
    )
    processing_guarantee: str = _setting(
        "at_least_once",
        _choice(("at_least_once", "exactly_once")),
        "exactly_once: predictions, dead letters and source offsets commit in one Kafka transaction "
        "per partition (read them with isolation.level=read_committed); at_least_once: a crash can "
        "repeat some, marked replayed.",
    )
    transaction_interval: float = _setting(
        "0.1",
        _positive_float,
        "With exactly_once: seconds a partition's transaction stays open at most; its outputs are "
        "visible to read_committed consumers once it commits.",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read STREAMAPP_<NAME> variables; unknown STREAMAPP_ variables are errors (typos)."""
        env = os.environ if env is None else env
        known = {f.name.upper() for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k[len(PREFIX) :] not in known)
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known: "
                + ", ".join(PREFIX + k for k in sorted(known))
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = f.metadata["parse"](f.name.upper(), raw)
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that single values cannot express."""
        check_bounds_and_models(self)
        check_security(self)
        check_input(self)


def check_bounds_and_models(self: Settings) -> None:
    """Snapshot and message bounds, champion and challengers, signing keys, distinct topics."""
    if self.max_snapshot_bytes >= self.kafka_max_message_bytes:
        raise ConfigError(
            f"{PREFIX}MAX_SNAPSHOT_BYTES ({self.max_snapshot_bytes}) must be below "
            f"{PREFIX}KAFKA_MAX_MESSAGE_BYTES ({self.kafka_max_message_bytes}), which leaves room "
            "for the record's framing"
        )
    if self.pending_labels_max_bytes > self.max_snapshot_bytes // 2:
        # Waiting events pickle to 0.65-0.9 of their JSON (card events, one or two models):
        # half the snapshot leaves the other half for the models, so they alone never make a
        # partition's state too large to snapshot.
        raise ConfigError(
            f"{PREFIX}PENDING_LABELS_MAX_BYTES ({self.pending_labels_max_bytes}) must be at most "
            f"half of {PREFIX}MAX_SNAPSHOT_BYTES ({self.max_snapshot_bytes}): the events waiting "
            "for a label are part of every snapshot"
        )
    unforkable = snapshot_child.available() if self.snapshot_in != "loop" else None
    if unforkable:
        raise ConfigError(
            f"{PREFIX}SNAPSHOT_IN={self.snapshot_in} forks, which cannot work here ({unforkable}): "
            f"set {PREFIX}SNAPSHOT_IN=loop"
        )
    if self.model in self.challengers:
        raise ConfigError(
            f"{PREFIX}CHALLENGERS names the champion {self.model!r} ({PREFIX}MODEL); "
            "list only the other models"
        )
    if self.promote_after and not self.challengers:
        raise ConfigError(
            f"{PREFIX}PROMOTE_AFTER is set but {PREFIX}CHALLENGERS is empty: nothing to promote"
        )
    if self.signing_key_previous and not self.signing_key:
        raise ConfigError(
            f"{PREFIX}SIGNING_KEY_PREVIOUS is set but {PREFIX}SIGNING_KEY is not: the previous "
            "key only verifies; set the new key too"
        )
    topics = [self.events_topic, self.predictions_topic, self.deadletter_topic]
    if len(set(topics)) != len(topics):
        raise ConfigError(f"events, predictions and dead-letter topics must differ, got {topics}")


def check_security(self: Settings) -> None:
    """SASL needs its user and password; SASL and TLS values need a protocol that uses them
    (else they would be ignored and the worker would connect unauthenticated); files exist.
    The messages name variables, never the password's value."""
    protocol = f"{PREFIX}SECURITY_PROTOCOL={self.security_protocol}"
    sasl = self.security_protocol.startswith("SASL_")
    tls = self.security_protocol in ("SSL", "SASL_SSL")
    if sasl:
        missing = [
            f"{PREFIX}{name}"
            for name, value in (
                ("SASL_USERNAME", self.sasl_username),
                ("SASL_PASSWORD", self.sasl_password),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{protocol} needs {' and '.join(missing)} (Confluent Cloud: an API key and secret)"
            )
    else:
        given = [
            f"{PREFIX}{name}"
            for name, value in (
                ("SASL_USERNAME", self.sasl_username),
                ("SASL_PASSWORD", self.sasl_password),
                ("SASL_MECHANISM", self.sasl_mechanism != "PLAIN"),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set but {protocol} does not use SASL: set "
                f"{PREFIX}SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), or unset them"
            )
    files = (
        ("SSL_CAFILE", self.ssl_cafile),
        ("SSL_CERTFILE", self.ssl_certfile),
        ("SSL_KEYFILE", self.ssl_keyfile),
    )
    for name, path in files:
        if not path:
            continue
        if not tls:
            raise ConfigError(
                f"{PREFIX}{name} set but {protocol} does not use TLS: set "
                f"{PREFIX}SECURITY_PROTOCOL=SSL or SASL_SSL, or unset it"
            )
        if not os.path.isfile(path):
            raise ConfigError(f"{PREFIX}{name}={path!r}: no such file (give the path of a PEM file)")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{PREFIX}{name}={path!r}: not readable by this user")
    if self.ssl_keyfile and not self.ssl_certfile:
        raise ConfigError(f"{PREFIX}SSL_KEYFILE needs {PREFIX}SSL_CERTFILE, the certificate of that key")


def check_input(self: Settings) -> None:
    """The record mapping, the formats and the registry fit together (streamapp/mapping.py)."""
    fields_used = [f for f in (self.id_field, self.label_field, self.timestamp_field) if f]
    if len(set(fields_used)) != len(fields_used):
        raise ConfigError(
            f"{PREFIX}ID_FIELD, LABEL_FIELD and TIMESTAMP_FIELD must name different fields, got {fields_used}"
        )
    if self.exclude and self.features:
        raise ConfigError(
            f"{PREFIX}EXCLUDE only applies when {PREFIX}FEATURES is empty (every field a feature); "
            "list the features, or empty STREAMAPP_FEATURES"
        )
    if self.labels_topic in (self.events_topic, self.predictions_topic, self.deadletter_topic):
        raise ConfigError(
            f"{PREFIX}LABELS_TOPIC={self.labels_topic!r} is another of streamapp's topics; leave it "
            "empty when the labels come on the events topic"
        )
    if self.labels_topic and self.key_field:
        raise ConfigError(
            f"{PREFIX}LABELS_TOPIC and {PREFIX}KEY_FIELD together are not supported: key the events "
            "and the labels by entity (the labels topic must be co-partitioned with the events)"
        )
    if self.labels_topic and self.processing_guarantee == "exactly_once":
        raise ConfigError(
            f"{PREFIX}LABELS_TOPIC works with {PREFIX}PROCESSING_GUARANTEE=at_least_once for now "
            "(the models stay exact either way; predictions may repeat after a crash, marked replayed)"
        )
    for name, value in (("INPUT_FORMAT", self.input_format), ("OUTPUT_FORMAT", self.output_format)):
        if value == "avro" and not self.schema_registry_url:
            raise ConfigError(
                f"{PREFIX}{name}=avro needs {PREFIX}SCHEMA_REGISTRY_URL, the registry of its schemas"
            )
    if self.input_format == "avro" and self.key_field:
        raise ConfigError(
            f"{PREFIX}KEY_FIELD repartitions JSON events only; key the Avro records by entity instead"
        )
    if bool(self.schema_registry_username) != bool(self.schema_registry_password):
        raise ConfigError(
            f"{PREFIX}SCHEMA_REGISTRY_USERNAME and {PREFIX}SCHEMA_REGISTRY_PASSWORD go together "
            "(Confluent Cloud: the registry's API key and secret)"
        )
    plain = self.schema_registry_url.startswith("http://")
    if plain and self.schema_registry_username:
        raise ConfigError(
            f"{PREFIX}SCHEMA_REGISTRY_URL is plain http: the registry password would cross the "
            "network in clear; use https"
        )
    if self.schema_registry_cafile:
        if plain or not self.schema_registry_url:
            raise ConfigError(f"{PREFIX}SCHEMA_REGISTRY_CAFILE needs an https {PREFIX}SCHEMA_REGISTRY_URL")
        if not os.path.isfile(self.schema_registry_cafile):
            raise ConfigError(
                f"{PREFIX}SCHEMA_REGISTRY_CAFILE={self.schema_registry_cafile!r}: no such file "
                "(give the path of a PEM file)"
            )


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs/configuration.md and `streamapp settings`."""
    return [(PREFIX + f.name.upper(), f.metadata["raw_default"], f.metadata["doc"]) for f in fields(Settings)]
