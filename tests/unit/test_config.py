"""Daemon configuration: TOML + environment overrides, validated once with messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvae.cli import main
from streamvae.config import Config, load_config
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
        ("[threshold]\nkind = 'fixed'\n", {}, "threshold.value must be set when threshold.kind = 'fixed'"),
        ("[kafka]\nsecurity_protocol = 'SASL_SSL'\n", {}, "kafka.sasl_mechanism and kafka.sasl_username must be set"),
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
