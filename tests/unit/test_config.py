"""Daemon configuration: TOML + environment overrides, validated once with messages that name the key."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamvae.cli import main
from streamvae.config import Config, RetrainConfig, ThresholdConfig, load_config
from streamvae.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "deploy" / "streamvae.toml", env={})
    assert cfg.topics.input == "sensors" and cfg.threshold.kind in ("spot", "dspot", "quantile", "fixed")


def test_the_example_config_detects_with_the_defaults() -> None:
    """One set of defaults: the example config (which the demo runs) changes nothing that
    decides what is an anomaly; replay and evaluate run the same defaults."""
    cfg, default = load_config(ROOT / "deploy" / "streamvae.toml", env={}), Config()
    for section in ("threshold", "episodes", "records", "rules"):
        assert getattr(cfg, section) == getattr(default, section), section


def test_environment_overrides_every_section(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[kafka]\nbootstrap_servers = "a:1"\n[group]\nmax_poll_records = 10\n')
    env = {"STREAMVAE_KAFKA__BOOTSTRAP_SERVERS": "b:2", "STREAMVAE_GROUP__MAX_POLL_RECORDS": "500",
           "STREAMVAE_RULES__STUCK_SENSOR": "false", "STREAMVAE_RECORDS__ENTITIES": "p1, p2",
           "STREAMVAE_THRESHOLD__Q": "0.0001", "STREAMVAE_RECORDS__MAX_GAP": "none"}
    cfg = load_config(p, env=env)
    assert cfg.kafka.bootstrap_servers == "b:2"
    assert cfg.group.max_poll_records == 500
    assert cfg.rules.stuck_sensor is False
    assert cfg.records.entities == ["p1", "p2"]
    assert cfg.threshold.q == 1e-4 and cfg.records.max_gap is None


@pytest.mark.parametrize(
    "text, env, expected",
    [
        ("[group]\nmax_poll_records = 0\n", {}, "group.max_poll_records must be an int >= 1; got 0"),
        ("", {"STREAMVAE_THRESHOLD__KIND": "magic"}, "threshold.kind must be one of spot, dspot, quantile, fixed; got 'magic'"),
        ("[thresholds]\nkind = 'spot'\n", {}, "unknown config section(s) ['thresholds']"),
        ("[kafka]\nbootstrap = 'x'\n", {}, "unknown key(s) ['bootstrap'] in [kafka]"),
        ("[kafka\n", {}, "is not valid TOML"),
        # episode timing counts windows: a duration in seconds from an older config is refused, not reinterpreted
        ("[episodes]\nclose_after = 60.0\n", {}, "episodes.close_after must be an int >= 0 (consecutive windows without a flag"),
        ("", {"STREAMVAE_EPISODES__ACCEPT_AFTER": "-3"}, "episodes.accept_after must be an int >= 0"),
        ("[episodes]\naccept = 'yes'\n", {}, "episodes.accept must be true or false"),
    ],
)
def test_bad_config_names_the_key_the_value_and_what_is_allowed(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env=env)
    assert expected in str(e.value)


def test_secrets_are_redacted_in_errors_and_in_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\nsasl_password = "hunter2"\n')
    for k in [k for k in __import__("os").environ if k.startswith("STREAMVAE_")]:
        monkeypatch.delenv(k)
    assert main(["config", "check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "***" in out


def test_config_check_of_a_bad_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[episodes]\nopen_after = -1\n")
    assert main(["config", "check", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "episodes.open_after" in err[0] and "-1" in err[0]
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


# --- one vocabulary, one message shape: every setting refused at load ---------------------
# A bad value for every key: (TOML literal, the same as an environment string; None where
# an environment string cannot be wrong for it). A key added to config.py without a line
# here fails test_every_setting_has_a_bad_value.
BAD: dict[str, tuple[str, str | None]] = {
    "kafka.bootstrap_servers": ('"broker:99999"', "broker:99999"),
    "kafka.client_id": ('""', ""),
    "kafka.security_protocol": ('"TLS"', "TLS"),
    "kafka.sasl_mechanism": ('"GSSAPI"', "GSSAPI"),
    "kafka.sasl_username": ("5", None),
    "kafka.sasl_password": ("5", None),
    "kafka.ssl_cafile": ("5", None),
    "kafka.ssl_certfile": ("5", None),
    "kafka.ssl_keyfile": ("5", None),
    "kafka.ssl_password": ("5", None),
    "kafka.ssl_check_hostname": ('"yes please"', "yes please"),
    "kafka.request_timeout_ms": ("500", "500"),  # kafka-python's consumer refused it after the model loaded
    "topics.input": ('"my sensors"', "my sensors"),  # not a legal topic name: refused at subscribe
    "topics.alerts": ('"alerts/v2"', "alerts/v2"),
    "topics.dead_letter": ('".."', ".."),
    "topics.control": ('""', ""),
    "topics.samples": ('"' + "s" * 250 + '"', "s" * 250),
    "topics.scores": ('"bad topic"', "bad topic"),
    "group.id": ('""', ""),
    "group.max_poll_records": ("0", "0"),
    "group.poll_timeout_ms": ("0", "0"),
    "group.fetch_min_bytes": ("0", "0"),
    "group.fetch_max_wait_ms": ("501", "501"),
    "group.commit_interval_ms": ("-1", "-1"),
    "group.session_timeout_ms": ("999", "999"),
    "group.max_poll_interval_ms": ("9999", "9999"),
    "group.auto_offset_reset": ('"newest"', "newest"),
    "group.instance_id": ('"pod 1"', "pod 1"),  # the broker refuses such a group.instance.id
    "group.delivery": ('"exactly-once"', "exactly-once"),
    "records.max_record_bytes": ("0", "0"),
    "records.max_future_s": ("-1.0", "-1"),
    "records.max_lateness": ("-0.5", "-0.5"),
    "records.max_gap": ("inf", "inf"),  # the window assembler refused it after the model loaded
    "records.entities": ('["p1", ""]', None),
    "records.reject_window": ("5", "5"),
    "records.reject_share": ("0", "0"),
    "model.path": ('""', ""),
    "model.keep_versions": ("1", "1"),
    "threshold.kind": ('"mean"', "mean"),
    "threshold.q": ("1.5", "1.5"),
    "threshold.level": ("0.4", "0.4"),
    "threshold.depth": ("1", "1"),
    "threshold.value": ("inf", "inf"),
    "threshold.per_entity": ('"maybe"', "maybe"),
    "threshold.min_history": ("19", "19"),
    "threshold.min_history_s": ("-1.0", "-1"),
    "threshold.max_entities": ("0", "0"),
    "threshold.state_file": ("5", None),
    "threshold.save_every": ("0.0", "0"),
    "episodes.open_after": ("0", "0"),
    "episodes.close_after": ("-1", "-1"),
    "episodes.update_every": ("2.5", "2.5"),
    "episodes.accept": ('"maybe"', "maybe"),
    "episodes.accept_after": ("-1", "-1"),
    "episodes.accept_min_s": ("nan", "nan"),
    "rules.dead_sensor": ('"maybe"', "maybe"),
    "rules.stuck_sensor": ("1", None),
    "retrain.enabled": ('"maybe"', "maybe"),
    "retrain.buffer": ('"s3"', "s3"),
    "retrain.max_windows": ("99", "99"),
    "retrain.max_anomalies": ("0", "0"),
    "retrain.sample_every": ("0", "0"),
    "retrain.margin": ("-1.0", "-1"),
    "retrain.fleet_share": ("1.5", "1.5"),
    "retrain.shift_span": ("-1.0", "-1"),
    "retrain.state_dir": ("5", None),
    "retrain.schedule": ("-1.0", "-1"),
    "retrain.after_windows": ("-1", "-1"),
    "retrain.drift": ('"ddm"', "ddm"),
    "retrain.drift_delta": ("1.0", "1"),
    "retrain.min_interval": ("-1.0", "-1"),
    "retrain.min_windows": ("49", "49"),
    "retrain.epochs": ("0", "0"),
    "retrain.tolerance": ("0.5", "0.5"),
    "retrain.samples_retention_ms": ("0", "0"),
    "http.host": ('""', ""),
    "http.port": ("65536", "65536"),
    "http.ready_poll_age": ("0.5", "0.5"),
    "log.format": ('"xml"', "xml"),
    "log.level": ('"LOUD"', "LOUD"),
}


def _field(key: str) -> dataclasses.Field[Any]:
    section, name = key.split(".")
    cls = {f.name: f.default_factory for f in dataclasses.fields(Config)}[section]  # type: ignore[misc]
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _refusal(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env=env or {})
    return str(e.value)


def test_every_setting_has_a_bad_value() -> None:
    keys = {f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(getattr(Config(), s.name))}
    assert keys == set(BAD)


@pytest.mark.parametrize("key", sorted(BAD))
def test_a_bad_value_in_the_file_is_refused_at_load_in_the_one_shape(tmp_path: Path, key: str) -> None:
    section, name = key.split(".")
    literal = BAD[key][0]
    f = _field(key)
    v = tomllib.loads(f"v = {literal}")["v"]
    if isinstance(v, int) and not isinstance(v, bool) and "float" in str(f.type):
        v = float(v)
    shown = "***" if f.metadata["secret"] else repr(v)
    assert _refusal(tmp_path, f"[{section}]\n{name} = {literal}\n") == f"{key} must be {f.metadata['allowed']}; got {shown}"


@pytest.mark.parametrize("key", sorted(k for k, (_, env) in BAD.items() if env is not None))
def test_a_bad_value_in_the_environment_is_refused_at_load_in_the_one_shape(tmp_path: Path, key: str) -> None:
    section, name = key.split(".")
    var = f"STREAMVAE_{section.upper()}__{name.upper()}"
    msg = _refusal(tmp_path, "", {var: BAD[key][1] or ""})
    assert msg.startswith(f"{key} must be {_field(key).metadata['allowed']}; got ")


# The rules between settings, each with the exact message: the kind of threshold decides
# which settings it takes and their range (before, a quantile tracker with q = 0.001 or a
# SPOT with q = 0.5 passed the load and stopped the daemon after the model had loaded).
BETWEEN = [
    ("[threshold]\nkind = 'quantile'\n", 'threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.001'),
    ("[threshold]\nkind = 'quantile'\nq = 0.45\n", 'threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.45'),
    ("[threshold]\nq = 0.5\n", 'threshold.q must be a number in (0, 0.1) for kind = "spot"; got 0.5'),
    ("[threshold]\nkind = 'dspot'\nq = 0.2\n", 'threshold.q must be a number in (0, 0.1) for kind = "dspot"; got 0.2'),
    ("[threshold]\nkind = 'fixed'\n", 'threshold.value must be a finite number for kind = "fixed"; got None'),
    ("[threshold]\nkind = 'dspot'\nmin_history = 50\ndepth = 40\n",  # an entity's own DSPOT could never start
     'threshold.depth must be an int in [2, 39] for kind = "dspot", per_entity = true and min_history = 50; got 40'),
    ("[kafka]\nsecurity_protocol = 'SASL_SSL'\n",
     'kafka.sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 for security_protocol = "SASL_SSL"; got None'),
    ("[kafka]\nsecurity_protocol = 'SASL_PLAINTEXT'\nsasl_mechanism = 'PLAIN'\n",
     'kafka.sasl_username must be a non-empty string for security_protocol = "SASL_PLAINTEXT"; got None'),
    ("[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_mechanism = 'SCRAM-SHA-256'\nsasl_username = 'u'\n",
     'kafka.sasl_password must be a non-empty string for security_protocol = "SASL_SSL"; got None'),
    ("[retrain]\nmax_windows = 1000\nmin_windows = 5000\n",  # the buffer never holds 5000: no retrain, ever
     "retrain.min_windows must be an int in [50, 1000] for retrain.max_windows = 1000; got 5000"),
]


@pytest.mark.parametrize("text, expected", BETWEEN)
def test_the_rules_between_settings_are_checked_at_load(tmp_path: Path, text: str, expected: str) -> None:
    assert _refusal(tmp_path, text) == expected


def test_the_kind_of_threshold_is_checked_with_its_settings_from_the_environment_too(tmp_path: Path) -> None:
    assert _refusal(tmp_path, "", {"STREAMVAE_THRESHOLD__KIND": "quantile"}) == BETWEEN[0][1]
    assert _refusal(tmp_path, "[threshold]\nkind = 'quantile'\nq = 0.99\n", {"STREAMVAE_THRESHOLD__KIND": "spot"}) == \
        'threshold.q must be a number in (0, 0.1) for kind = "spot"; got 0.99'
    cfg = load_config(None, env={"STREAMVAE_THRESHOLD__KIND": "quantile", "STREAMVAE_THRESHOLD__Q": "0.995"})
    assert cfg.threshold.tracker_params() == {"q": 0.995}


@pytest.mark.parametrize("text, params", [
    ("[threshold]\nkind = 'spot'\n", {"q": 1e-3, "level": 0.98}),
    ("[threshold]\nkind = 'dspot'\nq = 0.01\ndepth = 20\n", {"q": 0.01, "level": 0.98, "depth": 20}),
    ("[threshold]\nkind = 'dspot'\nper_entity = false\nmin_history = 50\ndepth = 400\n",
     {"q": 1e-3, "level": 0.98, "depth": 400}),
    ("[threshold]\nkind = 'quantile'\nq = 0.5\n", {"q": 0.5}),
    ("[threshold]\nkind = 'fixed'\nvalue = 3\n", {"value": 3.0}),
])
def test_each_kind_gets_the_settings_it_takes(tmp_path: Path, text: str, params: dict[str, float]) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    assert load_config(p, env={}).threshold.tracker_params() == params


@pytest.mark.parametrize("servers", ["h1:9092,h2:9093", "localhost", "10.0.0.1:9092", "[::1]:9092", "::1",
                                     "SASL_SSL://broker.example:9093", " h1:1 , h2:65535 "])
def test_bootstrap_servers_kafka_python_reads_are_accepted(servers: str) -> None:
    assert load_config(None, env={"STREAMVAE_KAFKA__BOOTSTRAP_SERVERS": servers}).kafka.bootstrap_servers == servers


@pytest.mark.parametrize("servers", ["h:0", "h:abc", ":9092", "[::1", "[::1]9092", "h1:9092,", "h:"])
def test_bootstrap_servers_it_cannot_read_are_refused(servers: str) -> None:
    with pytest.raises(ConfigError, match=r"^kafka\.bootstrap_servers must be host:port"):
        load_config(None, env={"STREAMVAE_KAFKA__BOOTSTRAP_SERVERS": servers})


def test_flags_over_a_config_are_checked_by_the_same_rules() -> None:
    """Commands put their flags over a loaded config with ``replace``: the same checks run."""
    with pytest.raises(ConfigError) as e:
        replace(ThresholdConfig(), kind="quantile")
    assert str(e.value) == BETWEEN[0][1]
    with pytest.raises(ConfigError, match=r"^retrain\.epochs must be an int >= 1; got 0$"):
        RetrainConfig(enabled=True, epochs=0)
    assert replace(ThresholdConfig(), kind="quantile", q=0.999).tracker_params() == {"q": 0.999}


def test_each_section_names_itself_as_the_config_does() -> None:
    for f in dataclasses.fields(Config):
        assert getattr(Config(), f.name).section == f.name


def test_secrets_never_show_in_a_repr() -> None:
    """A config printed by a debugger, a traceback's locals or a stray ``log.debug("%r")``."""
    cfg = load_config(env={"STREAMVAE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMVAE_KAFKA__SASL_MECHANISM": "PLAIN",
                           "STREAMVAE_KAFKA__SASL_USERNAME": "u", "STREAMVAE_KAFKA__SASL_PASSWORD": "hunter2-xyz",
                           "STREAMVAE_KAFKA__SSL_PASSWORD": "keypass-xyz"})
    assert cfg.kafka.sasl_password == "hunter2-xyz"
    for text in (repr(cfg), str(cfg), repr(cfg.kafka)):
        assert "hunter2-xyz" not in text and "keypass-xyz" not in text
