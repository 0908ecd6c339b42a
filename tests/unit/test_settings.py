"""Bad configuration fails at start with a message that names the variable and the fix."""

import ssl
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamapp import cli, kafka_security
from streamapp.settings import ConfigError, Settings, documented


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.partitions == 8
    assert settings.broker == "kafka://127.0.0.1:9092"
    assert settings.web_bind == "127.0.0.1"


def test_values_are_parsed_and_brokers_normalised() -> None:
    settings = Settings.from_env(
        {
            "STREAMAPP_PARTITIONS": "4",
            "STREAMAPP_BROKER": "h1:9092;kafka://h2:9093",
            "STREAMAPP_SNAPSHOT_EVERY_SECONDS": "2.5",
        }
    )
    assert settings.partitions == 4
    assert settings.broker == "kafka://h1:9092;kafka://h2:9093"
    assert settings.snapshot_every_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMAPP_PARTITIONS": "eight"}, "STREAMAPP_PARTITIONS='eight' is not a whole number"),
        ({"STREAMAPP_PARTITIONS": "0"}, "must be at least 1"),
        ({"STREAMAPP_SNAPSHOT_EVERY_SECONDS": "-1"}, "positive, finite"),
        ({"STREAMAPP_SNAPSHOT_EVERY_SECONDS": "inf"}, "positive, finite"),
        ({"STREAMAPP_EVENTS_TOPIC": "bad topic!"}, "not a valid Kafka topic name"),
        ({"STREAMAPP_BROKER": "nohostport"}, "is not host:port"),
        ({"STREAMAPP_TASK": "clustering"}, "is not one of auto, binary"),
        ({"STREAMAPP_PARTITONS": "3"}, "unknown setting STREAMAPP_PARTITONS"),
        ({"STREAMAPP_PREDICTIONS_TOPIC": "events"}, "must differ"),
        ({"STREAMAPP_MAX_SNAPSHOT_BYTES": "80000000"}, "must be below STREAMAPP_KAFKA_MAX_MESSAGE_BYTES"),
    ],
)
def test_bad_values_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = documented()
    assert {name for name, _, _ in rows} >= {"STREAMAPP_BROKER", "STREAMAPP_MODEL", "STREAMAPP_PARTITIONS"}
    assert all(doc for _, _, doc in rows)
    assert Settings.from_env({name: default for name, default, _ in rows}) == Settings.from_env({})


# A throw-away CA certificate (its key was not kept): a PEM file to load.
CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUdumIOAFAeSGkArb+9vbpJk93wpYwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWc3RyZWFtYXBwIHVuaXQtdGVzdCBDQTAeFw0yNjExMjYxNTQ5
MDVaFw0zNjExMjMxNTQ5MDVaMCExHzAdBgNVBAMMFnN0cmVhbWFwcCB1bml0LXRl
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASR4qjTEeYjQElnGTr2p6dd
G8BA+teaXZWinxQPgq4UTHwReg+8WSEtcRtBsoRgPJtkPCm8t/1VL6U6/DJmtaof
o1MwUTAdBgNVHQ4EFgQUWwJNN/ZlxSUgn9AZymUphb7qUMMwHwYDVR0jBBgwFoAU
WwJNN/ZlxSUgn9AZymUphb7qUMMwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiB4xSzwQJQpimSHUjqlqw+LenMfeQ0PrN46nXzwZzATfQIhAKhzRLFc
8p37XLCbqiJXd+/pnuCbdZQT/KOPTAO3Zzq3
-----END CERTIFICATE-----
"""

SASL = {
    "STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
    "STREAMAPP_SASL_USERNAME": "api-key",
    "STREAMAPP_SASL_PASSWORD": "s3cr3t-value",
}


def test_security_settings_are_parsed() -> None:
    settings = Settings.from_env({**SASL, "STREAMAPP_SASL_MECHANISM": "scram-sha-512"})
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_password.reveal() == "s3cr3t-value"
    # A secret file or `echo` adds a newline that is no part of the password.
    assert Settings.from_env({**SASL, "STREAMAPP_SASL_PASSWORD": "pw\n"}).sasl_password.reveal() == "pw"
    assert Settings.from_env({}).security_protocol == "PLAINTEXT"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMAPP_SECURITY_PROTOCOL": "TLS"}, "is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({**SASL, "STREAMAPP_SASL_MECHANISM": "GSSAPI"}, "is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (
            {"STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL"},
            "SASL_SSL needs STREAMAPP_SASL_USERNAME and STREAMAPP_SASL_PASSWORD",
        ),
        ({**SASL, "STREAMAPP_SASL_PASSWORD": ""}, "SASL_SSL needs STREAMAPP_SASL_PASSWORD"),
        (
            {"STREAMAPP_SASL_USERNAME": "u", "STREAMAPP_SASL_PASSWORD": "p"},
            "STREAMAPP_SASL_USERNAME, STREAMAPP_SASL_PASSWORD set but STREAMAPP_SECURITY_PROTOCOL="
            "PLAINTEXT does not use SASL: set STREAMAPP_SECURITY_PROTOCOL=SASL_SSL",
        ),
        ({"STREAMAPP_SASL_MECHANISM": "SCRAM-SHA-256"}, "STREAMAPP_SASL_MECHANISM set but"),
        (
            {
                **SASL,
                "STREAMAPP_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "STREAMAPP_SSL_CAFILE": __file__,
            },
            "STREAMAPP_SSL_CAFILE set but STREAMAPP_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
        ),
        ({**SASL, "STREAMAPP_SSL_CAFILE": "/nonexistent/ca.pem"}, "'/nonexistent/ca.pem': no such file"),
        (
            {"STREAMAPP_SECURITY_PROTOCOL": "SSL", "STREAMAPP_SSL_KEYFILE": __file__},
            "STREAMAPP_SSL_KEYFILE needs STREAMAPP_SSL_CERTFILE",
        ),
    ],
)
def test_bad_security_settings_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)
    assert "s3cr3t-value" not in str(err.value)


def test_the_password_never_prints() -> None:
    settings = Settings.from_env(SASL)
    shown = [repr(settings), str(settings), f"{settings.sasl_password}", repr(settings.sasl_password)]
    assert all("s3cr3t-value" not in text for text in shown)
    assert "sasl_password=Secret('********')" in repr(settings)
    assert repr(Settings.from_env({}).sasl_password) == "Secret('')"


def test_settings_command_masks_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "STREAMAPP_SASL_PASSWORD=********" in out
    assert "STREAMAPP_SASL_USERNAME=api-key" in out
    assert "s3cr3t-value" not in out


def test_credentials_reach_faust_and_aiokafka(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)
    settings = Settings.from_env(
        {**SASL, "STREAMAPP_SASL_MECHANISM": "SCRAM-SHA-256", "STREAMAPP_SSL_CAFILE": str(ca)}
    )
    credentials = kafka_security.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert "s3cr3t-value" not in repr(credentials)
    faust_kwargs = credentials_to_aiokafka_auth(credentials)
    own_kwargs = kafka_security.aiokafka_auth(settings)
    for kwargs in (faust_kwargs, own_kwargs):
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("api-key", "s3cr3t-value")
        context = kwargs["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert len(context.get_ca_certs()) == 1  # the given CA alone, not the system's
    plain = Settings.from_env({})
    assert kafka_security.faust_credentials(plain) is None
    assert kafka_security.aiokafka_auth(plain) == {"security_protocol": "PLAINTEXT"}
    tls = Settings.from_env({"STREAMAPP_SECURITY_PROTOCOL": "SSL"})
    assert isinstance(kafka_security.faust_credentials(tls), faust.SSLCredentials)


def test_a_file_that_is_no_pem_certificate_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    settings = Settings.from_env({**SASL, "STREAMAPP_SSL_CAFILE": str(bad)})
    with pytest.raises(ConfigError, match=r"STREAMAPP_SSL_CAFILE=.* holds no usable PEM CA certificate"):
        kafka_security.faust_credentials(settings)


def test_the_waiting_events_must_fit_half_a_snapshot() -> None:
    env = {"STREAMAPP_MAX_SNAPSHOT_BYTES": "2000", "STREAMAPP_PENDING_LABELS_MAX_BYTES": "1001"}
    with pytest.raises(ConfigError, match=r"PENDING_LABELS_MAX_BYTES .* must be at most half of"):
        Settings.from_env(env)
    assert (
        Settings.from_env({**env, "STREAMAPP_PENDING_LABELS_MAX_BYTES": "1000"}).pending_labels_max_bytes
        == 1000
    )
