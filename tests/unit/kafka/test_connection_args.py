"""connection_args: every [kafka] setting reaches kafka-python, secrets stay out of reprs
and kafka-python's log lines; check_access's verdicts, without a broker (the real broker:
tests/integration/test_secure_kafka.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError, UnsupportedSaslMechanismError

from streamvae.config import KafkaConfig
from streamvae.errors import KafkaAccessError
from streamvae.kafka import clients
from streamvae.kafka.clients import RedactSecrets, check_access, connection_args

SECRET = "s3cr3t-Pw_9"
KEY_SECRET = "k3y-Pässword"  # not ASCII: inside a bytes repr it shows escaped

SECURE = KafkaConfig(
    bootstrap_servers="h1:9093,h2:9094", client_id="tool-x", security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512", sasl_username="alice", sasl_password=SECRET, ssl_cafile="/etc/ca.pem",
    ssl_certfile="/etc/client.pem", ssl_keyfile="/etc/client.key", ssl_password=KEY_SECRET,
    ssl_check_hostname=False, request_timeout_ms=12_345,
)  # fmt: skip

# every [kafka] key -> (kafka-python's argument, the value it gets from SECURE)
ARGUMENT = {
    "bootstrap_servers": ("bootstrap_servers", ["h1:9093", "h2:9094"]),
    "client_id": ("client_id", "tool-x"),
    "security_protocol": ("security_protocol", "SASL_SSL"),
    "sasl_mechanism": ("sasl_mechanism", "SCRAM-SHA-512"),
    "sasl_username": ("sasl_plain_username", "alice"),
    "sasl_password": ("sasl_plain_password", SECRET),
    "ssl_cafile": ("ssl_cafile", "/etc/ca.pem"),
    "ssl_certfile": ("ssl_certfile", "/etc/client.pem"),
    "ssl_keyfile": ("ssl_keyfile", "/etc/client.key"),
    "ssl_password": ("ssl_password", KEY_SECRET),
    "ssl_check_hostname": ("ssl_check_hostname", False),
    "request_timeout_ms": ("request_timeout_ms", 12_345),
}


def test_the_table_names_every_kafka_setting() -> None:
    assert set(ARGUMENT) == {f.name for f in dataclasses.fields(KafkaConfig)}, "a new [kafka] key: map it here"


@pytest.mark.parametrize("key", sorted(ARGUMENT))
def test_every_setting_reaches_the_clients_arguments(key: str) -> None:
    name, value = ARGUMENT[key]
    assert connection_args(SECURE)[name] == value


@pytest.mark.parametrize("cls", [KafkaConsumer, KafkaProducer, KafkaAdminClient])
def test_every_argument_is_one_each_client_knows(cls: type) -> None:
    assert set(connection_args(SECURE)) <= set(cls.DEFAULT_CONFIG)  # type: ignore[attr-defined]


def test_plaintext_passes_no_tls_or_sasl_argument() -> None:
    args = connection_args(KafkaConfig(bootstrap_servers="h:1"))
    assert set(args) == {"bootstrap_servers", "client_id", "security_protocol", "request_timeout_ms"}
    assert args["security_protocol"] == "PLAINTEXT"


def test_the_hostname_check_is_on_unless_turned_off() -> None:
    assert connection_args(dataclasses.replace(SECURE, ssl_check_hostname=True))["ssl_check_hostname"] is True


@pytest.mark.parametrize("show", [repr, str, lambda a: "%s %r" % (a, a), lambda a: f"{a}"])
def test_secrets_are_not_in_the_arguments_repr(show: object) -> None:
    args = connection_args(SECURE)
    text = show(args)  # type: ignore[operator]
    assert SECRET not in text and KEY_SECRET not in text and "***" in text
    assert "alice" in text and "/etc/ca.pem" in text  # what is not secret still shows


@pytest.fixture
def kafka_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="kafka")
    connection_args(SECURE)  # registers its secrets
    return caplog


@pytest.mark.parametrize("logger, msg, arg", [
    # kafka-python at DEBUG: an admin client's whole configuration ...
    ("kafka.admin.client", "Starting KafkaAdminClient with configuration: %s", {"sasl_plain_password": SECRET}),
    # ... every request, SASL PLAIN's (user, user, password) among them, and its bytes
    ("kafka.net.connection", "%s Request %d: %s", None),
    ("kafka.protocol.parser", "node=x Send: %s", bytearray(b"\x00alice\x00alice\x00" + SECRET.encode())),
    ("kafka.net.transport", "ssl key %s", KEY_SECRET.encode()),  # escaped inside the bytes repr
])  # fmt: skip
def test_kafka_python_log_lines_never_show_a_secret(kafka_debug: pytest.LogCaptureFixture, logger: str, msg: str,
                                                    arg: object) -> None:
    from kafka.protocol.sasl import SaslAuthenticateRequest

    args = ("conn", 4, SaslAuthenticateRequest(auth_bytes=b"\x00alice\x00alice\x00" + SECRET.encode())) if arg is None else (arg,)
    logging.getLogger(logger).debug(msg, *args)
    (rec,) = [r for r in kafka_debug.records if r.name == logger]
    text = rec.getMessage()
    assert SECRET not in text and KEY_SECRET not in text and repr(KEY_SECRET.encode())[2:-1] not in text
    assert "***" in text


def test_the_filter_leaves_other_lines_alone(kafka_debug: pytest.LogCaptureFixture) -> None:
    logging.getLogger("kafka.net.connection").debug("Response %d: %s", 7, "ok")
    (rec,) = [r for r in kafka_debug.records if r.name == "kafka.net.connection"]
    assert rec.getMessage() == "Response 7: ok" and rec.args == (7, "ok")


def test_a_handler_can_carry_the_filter_for_every_logger() -> None:
    connection_args(SECURE)
    r = logging.LogRecord("streamvae.x", logging.INFO, "x.py", 1, "config %s", ({"pw": SECRET},), None)
    assert RedactSecrets().filter(r) and SECRET not in r.getMessage()


# -- check_access without a broker -------------------------------------------------------

def test_plaintext_is_never_probed() -> None:
    t0 = time.monotonic()
    for _ in range(1000):
        check_access(KafkaConfig(bootstrap_servers="192.0.2.1:9092"))  # TEST-NET-1: nothing answers
    assert time.monotonic() - t0 < 0.1


def test_a_broker_that_cannot_be_reached_is_left_to_the_client() -> None:
    from streamvae.testing.net import free_port

    t0 = time.monotonic()
    check_access(dataclasses.replace(SECURE, bootstrap_servers=f"127.0.0.1:{free_port()}"), timeout_s=5)
    assert time.monotonic() - t0 < 5


def _ssl_failure(e: ssl.SSLError) -> KafkaConnectionError:
    try:
        raise e
    except ssl.SSLError as inner:
        try:
            raise KafkaConnectionError(f"Handshake failed: {inner}")  # as kafka-python raises it
        except KafkaConnectionError as outer:
            return outer


def _verify_failed() -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    e.verify_message = "self-signed certificate in certificate chain"
    return e


@pytest.mark.parametrize("error, after_versions, words", [
    (SaslAuthenticationFailedError("invalid credentials"), True,
     "kafka: authentication failed for user 'alice' (SASL SCRAM-SHA-512) at h1:9093; check kafka.sasl_username"),
    (KafkaConnectionError("socket disconnected"), True, "kafka: authentication failed for user 'alice'"),
    (_ssl_failure(_verify_failed()), False,
     "kafka: the broker's certificate at h1:9093 is not trusted (ssl_cafile /etc/ca.pem): self-signed certificate"),
    (UnsupportedSaslMechanismError("Enabled mechanisms: ['PLAIN']"), True, "does not offer SASL SCRAM-SHA-512"),
])  # fmt: skip
def test_a_refusal_is_one_line_naming_its_cause(error: BaseException, after_versions: bool, words: str) -> None:
    e = clients._refusal(SECURE, "h1:9093", error, after_versions)
    assert isinstance(e, KafkaAccessError) and words in str(e) and "\n" not in str(e)
    assert SECRET not in str(e)


@pytest.mark.parametrize("error, after_versions, k", [
    (KafkaConnectionError("socket disconnected"), False, SECURE),  # before the broker answered: not a refusal
    (KafkaConnectionError("111 ECONNREFUSED"), False, SECURE),
    (_ssl_failure(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")), False, SECURE),  # a broker going away
    (KafkaConnectionError("socket disconnected"), True, dataclasses.replace(SECURE, security_protocol="SSL",
                                                                            sasl_mechanism=None)),
])  # fmt: skip
def test_what_is_not_a_refusal_is_left_to_the_client(error: BaseException, after_versions: bool, k: KafkaConfig) -> None:
    assert clients._refusal(k, "h1:9093", error, after_versions) is None


# -- the tools without a config (simulate, alerts, report --bootstrap) --------------------

def test_the_tools_take_tls_and_sasl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamvae.service.tools import kafka_config

    for key, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "alice",
                       "SASL_PASSWORD": SECRET, "SSL_CAFILE": "/etc/ca.pem", "SSL_CHECK_HOSTNAME": "false",
                       "BOOTSTRAP_SERVERS": "ignored:1"}.items():
        monkeypatch.setenv(f"STREAMVAE_KAFKA__{key}", value)
    k = kafka_config("h1:9093")
    assert (k.bootstrap_servers, k.client_id, k.security_protocol, k.sasl_password, k.ssl_check_hostname) == (
        "h1:9093", "streamvae-tools", "SASL_SSL", SECRET, False)  # --bootstrap wins


def test_a_bad_kafka_variable_is_refused_by_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamvae.errors import ConfigError
    from streamvae.service.tools import kafka_config

    monkeypatch.setenv("STREAMVAE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")  # without a mechanism, user, password
    with pytest.raises(ConfigError, match="kafka.sasl_mechanism"):
        kafka_config("h1:9093")


def test_without_kafka_variables_the_tools_connect_in_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamvae.service.tools import kafka_config

    for key in [k for k in os.environ if k.startswith("STREAMVAE_KAFKA__")]:
        monkeypatch.delenv(key)
    assert kafka_config("h1:9093") == KafkaConfig(bootstrap_servers="h1:9093", client_id="streamvae-tools")
