"""deploy/kafka/broker.py's secure mode without a broker: the settings it renders and the
client files it writes (the broker itself: tests/integration/test_secure_kafka.py)."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest

from streamvae.config import load_config
from streamvae.testing.broker import broker_module

PASSWORDS = {"store_password": "st0re-pw", "admin_password": "adm1n-pw", "client_password": "cl1ent-pw"}


@pytest.fixture(scope="module")
def mod() -> Any:
    return broker_module()


@pytest.fixture
def cred(mod: Any, tmp_path: Path) -> Any:
    return mod.Credentials(tmp_path / "tls" / "ca.pem", PASSWORDS["store_password"], PASSWORDS["admin_password"],
                           PASSWORDS["client_password"])


def properties(text: str) -> dict[str, str]:
    """A Java properties text as a dict: later keys win, ``\\`` continues a line."""
    out: dict[str, str] = {}
    for line in text.replace("\\\n", "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_secure_block_overrides_the_listeners_and_fills_every_placeholder(mod: Any, cred: Any) -> None:
    secure = mod.SECURE_TEMPLATE.read_text().format(port=9093, ctrl=9094, tls="/run/tls", client_user=cred.client_user,
                                                    **PASSWORDS)
    props = properties(mod.SERVER_TEMPLATE.read_text().format(port=9093, ctrl=9094, data_dir="/run/data") + "\n" + secure)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9093,CONTROLLER://127.0.0.1:9094"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9093"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert set(props["sasl.enabled.mechanisms"].split(",")) == {"PLAIN", *mod.SCRAM_MECHANISMS}
    jaas = props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert 'user_admin="adm1n-pw"' in jaas and 'user_streamvae="cl1ent-pw"' in jaas and jaas.endswith(";")
    assert props["ssl.keystore.location"] == "/run/tls/broker.p12" and props["ssl.keystore.password"] == "st0re-pw"
    assert "{" not in secure and "PLAINTEXT://" not in props["listeners"]


def test_the_credentials_repr_shows_no_password(cred: Any) -> None:
    assert not [pw for pw in PASSWORDS.values() if pw in repr(cred)]
    assert cred.client_args("PLAIN")["sasl_plain_password"] == "cl1ent-pw"
    assert cred.admin_args() == {**cred.client_args("PLAIN"), "sasl_plain_username": "admin",
                                 "sasl_plain_password": "adm1n-pw"}


def test_the_client_files_work_for_streamvae_and_java_and_only_their_owner_reads_them(mod: Any, cred: Any,
                                                                                        tmp_path: Path) -> None:
    files = mod.write_client_files(tmp_path, "127.0.0.1:9093", cred)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    k = load_config(files["streamvae-kafka.toml"], env={}).kafka  # a valid [kafka] section of a streamvae config
    assert (k.bootstrap_servers, k.security_protocol, k.sasl_mechanism, k.sasl_username, k.sasl_password, k.ssl_cafile) == (
        "127.0.0.1:9093", "SASL_SSL", "SCRAM-SHA-512", "streamvae", "cl1ent-pw", str(cred.ca_pem))
    env = dict(shlex.split(line)[1].split("=", 1) for line in files["streamvae-kafka.env"].read_text().splitlines())
    assert load_config(None, env=env).kafka == k  # the same settings as STREAMVAE_KAFKA__* for simulate / alerts
    java = properties(files["client.properties"].read_text())
    assert java["security.protocol"] == "SASL_SSL" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert 'ScramLoginModule required username="streamvae" password="cl1ent-pw";' in java["sasl.jaas.config"]
    assert java["ssl.truststore.location"] == str(cred.ca_pem.parent / "truststore.p12")
    assert mod.Credentials.from_json(json.loads(json.dumps(cred.to_json()))).to_json() == cred.to_json()  # attach()


def test_keytool_makes_a_ca_python_loads_and_a_certificate_for_127_0_0_1_and_localhost(mod: Any, tmp_path: Path) -> None:
    ca = mod.make_certificates(tmp_path, "pw-123456")
    assert {p.name for p in tmp_path.iterdir()} >= {"ca.p12", "ca.pem", "broker.p12", "truststore.p12", "broker.pem"}
    ctx = ssl.create_default_context(cafile=str(ca))  # a PEM Python's ssl takes as ssl_cafile
    assert ctx.cert_store_stats()["x509_ca"] == 1
    pem = (tmp_path / "broker.pem").read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert bytes([0x87, 4, 127, 0, 0, 1]) in der and b"\x82\x09localhost" in der  # SAN iPAddress and dNSName
    assert os.access(mod.find_keytool(), os.X_OK)
