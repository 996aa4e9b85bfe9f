"""Logs (issue 18, item 3): JSON lines or the terminal's text, by configuration; secrets never appear."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from streamvae.config import Config, load_config
from streamvae.service import logs

ROOT = Path(__file__).resolve().parents[3]
SECRET = "hunter2-Zq"
SSL_SECRET = "k3y-pass"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")

log = logging.getLogger("streamvae.test_logs")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A root logger with no handler, as in ``streamvae`` outside pytest, for the test's
    body (pytest adds its own handlers to root around each phase); all restored after."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    level, kafka_level, secrets = root.level, kafka.level, set(logs._redact.secrets)
    monkeypatch.setattr(logs, "_handler", None)
    monkeypatch.delenv("STREAMVAE_LOG__FORMAT", raising=False)
    monkeypatch.delenv("STREAMVAE_LOG__LEVEL", raising=False)
    yield
    root.setLevel(level)
    kafka.setLevel(kafka_level)
    logs._redact.secrets = secrets


@contextmanager
def bare() -> Iterator[None]:
    root = logging.getLogger()
    theirs = root.handlers[:]
    for h in theirs:
        root.removeHandler(h)
    try:
        yield
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in theirs:
            root.addHandler(h)


def _config(fmt: str = "json", level: str = "INFO") -> Config:
    return load_config(env={"STREAMVAE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMVAE_KAFKA__SASL_MECHANISM": "PLAIN",
                            "STREAMVAE_KAFKA__SASL_USERNAME": "svc", "STREAMVAE_KAFKA__SASL_PASSWORD": SECRET,
                            "STREAMVAE_KAFKA__SSL_PASSWORD": SSL_SECRET,
                            "STREAMVAE_LOG__FORMAT": fmt, "STREAMVAE_LOG__LEVEL": level})


def _objects(err: str) -> list[dict[str, Any]]:
    lines = err.splitlines()
    assert lines, "nothing was logged"
    out = [json.loads(line) for line in lines]
    assert all(isinstance(d, dict) for d in out)
    return out


class _Odd:
    def __str__(self) -> str:
        return f"odd object holding {SECRET}"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_a_json_line_is_one_object_with_time_level_logger_and_event(fresh: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bare():
        logs.configure(fmt="json")
        log.info("partitions assigned: %s", ["sensors-0", "sensors-1"])
        log.debug("not shown at INFO")
        (d,) = _objects(capsys.readouterr().err)
        assert TIME.match(d["time"]), d["time"]
        assert (d["level"], d["logger"]) == ("INFO", "streamvae.test_logs")
        assert d["event"] == "partitions assigned: ['sensors-0', 'sensors-1']"


def test_extras_are_fields_and_odd_ones_do_not_break_the_line(fresh: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bare():
        logs.configure(fmt="json")
        log.warning("dead-lettered partition=%d offset=%d", 3, 42,
                    extra={"entity": "pump-17", "topic": "sensors", "partition": 3, "offset": np.int64(42),
                           "key": b"\xff\x00", "obj": _Odd(), "bad": _Unprintable(), "tags": {"a", "b"}, "nan": float("nan"),
                           "level": "a clash"})
        log.info("bad format %d", "x")  # a call site's mistake still gives one object
        d, e = _objects(capsys.readouterr().err)
        assert (d["entity"], d["topic"], d["partition"], d["offset"]) == ("pump-17", "sensors", 3, 42)
        assert d["level"] == "WARNING" and d["extra.level"] == "a clash"
        assert d["bad"] == "<unprintable _Unprintable>" and sorted(d["tags"]) == ["a", "b"] and d["nan"] is None
        assert e["event"] == "bad format %d" and e["args"] == ["x"] and "format_error" in e


def test_an_exception_is_its_traceback_in_exc(fresh: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bare():
        logs.configure(fmt="json")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("batch failed; it will be read again")
        (d,) = _objects(capsys.readouterr().err)
        assert d["level"] == "ERROR" and d["event"] == "batch failed; it will be read again"
        assert d["exc"].startswith("Traceback (most recent call last):") and d["exc"].endswith("ValueError: boom")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_secret_of_the_config_never_appears(fresh: None, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    with bare():
        logs.apply(_config(fmt))
        log.warning(f"connecting with password {SECRET}")
        log.warning("sasl_password=%s ssl_password=%r", SECRET, SSL_SECRET, extra={"cfg": {"pw": [SECRET]}, "obj": _Odd(),
                                                                                     SECRET: "as a key"})
        try:
            raise ConnectionError(f"auth failed for svc:{SECRET}")
        except ConnectionError:
            log.exception("cannot reach the broker")
        logs.exit_line(f"streamvae: error: bad password {SECRET}")
        err = capsys.readouterr().err
        assert SECRET not in err and SSL_SECRET not in err and "hunter2" not in err
        assert err.count("***") == (8 if fmt == "json" else 5)  # text shows no extras
        if fmt == "json":
            objs = _objects(err)
            assert len(objs) == 4 and objs[1]["cfg"] == {"pw": ["***"]} and "auth failed for svc:***" in objs[2]["exc"]
            assert objs[3]["event"] == "streamvae: error: bad password ***" and objs[3]["level"] == "ERROR"
        else:
            assert err.splitlines()[-1] == "streamvae: error: bad password ***"  # the exit line as it always was


def test_the_text_format_is_the_terminal_one_as_before(fresh: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bare():
        logs.configure()
        log.error("input rejected: %d%% refused", 40, extra={"partition": 3})
        line = capsys.readouterr().err
        assert TEXT.match(line) and line.endswith(" ERROR streamvae.test_logs: input rejected: 40% refused\n"), line
        logs.exit_line("streamvae: error: x")
        assert capsys.readouterr().err == "streamvae: error: x\n"


def test_level_debug_and_kafka(fresh: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bare():
        logs.apply(_config("text", "WARNING"))
        log.info("hidden")
        log.warning("shown")
        assert [line.split(" ", 3)[3] for line in capsys.readouterr().err.splitlines()] == ["streamvae.test_logs: shown"]
        assert logging.getLogger("kafka").level == logging.WARNING
        logs.apply(_config("text", "WARNING"), debug=True)  # --debug wins over the config's level
        log.debug("now shown")
        assert "now shown" in capsys.readouterr().err
        assert logging.getLogger("kafka").level == logging.DEBUG
        assert len(logging.getLogger().handlers) == 1  # a second call replaces its handler


def test_the_environment_sets_the_format_before_the_config_is_read(fresh: None, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with bare():
        monkeypatch.setenv("STREAMVAE_LOG__FORMAT", "json")
        logs.configure()
        log.info("starting")
        assert _objects(capsys.readouterr().err)[0]["event"] == "starting"
        monkeypatch.setenv("STREAMVAE_LOG__FORMAT", "xml")  # not a format: text here, and the config's load names it
        logs.configure()
        log.info("starting")
        assert TEXT.match(capsys.readouterr().err)


def test_a_secret_in_the_environment_is_masked_before_any_config(fresh: None, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``simulate`` and ``alerts`` read [kafka] from the environment and load no config."""
    monkeypatch.setenv("STREAMVAE_KAFKA__SASL_PASSWORD", SECRET)
    with bare():
        logs.configure()
        log.warning("connecting as svc:%s", SECRET)
        assert capsys.readouterr().err.endswith(" WARNING streamvae.test_logs: connecting as svc:***\n")


def test_a_root_logger_someone_else_configured_is_left_alone(fresh: None) -> None:
    with bare():
        mine = logging.NullHandler()
        logging.getLogger().addHandler(mine)
        logs.configure(fmt="json")
        assert logging.getLogger().handlers == [mine]


def test_a_command_logs_json_lines_only_and_no_secret(tmp_path: Path) -> None:
    """``streamvae models list`` (quick: no TensorFlow) on a registry whose HISTORY has a bad
    line: a WARNING from the registry, and the password in the path is masked; then a
    missing registry: the error line is an object too; then a config that does not load,
    with STREAMVAE_LOG__FORMAT=json: JSON before any config is read."""
    reg = tmp_path / f"reg-{SECRET}"
    (reg / "v1").mkdir(parents=True)
    (reg / "HISTORY").write_text("not json\n")
    cfg = tmp_path / "streamvae.toml"
    body = (f'[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "svc"\n'
            f'sasl_password = "{SECRET}"\n[model]\npath = "{{}}"\n[log]\nformat = "json"\n')
    cfg.write_text(body.format(reg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMVAE_")} | {"PYTHONPATH": str(ROOT)}

    def streamvae(*args: str, **extra: str) -> list[dict[str, Any]]:
        p = subprocess.run([sys.executable, "-m", "streamvae", *args], capture_output=True, text=True, cwd=tmp_path,
                           env=env | extra, timeout=60)
        assert SECRET not in p.stderr, p.stderr
        return _objects(p.stderr)

    (d,) = streamvae("models", "list", "--config", str(cfg))
    assert (d["level"], d["logger"], d["event"]) == ("WARNING", "streamvae.registry.store",
                                                     f"{tmp_path}/reg-***/HISTORY line 1 is not JSON; skipped")
    cfg.write_text(body.format(tmp_path / f"gone-{SECRET}"))
    (d,) = streamvae("models", "list", "--config", str(cfg))
    assert d["level"] == "ERROR" and d["event"].startswith(f"streamvae: error: registry {tmp_path}/gone-*** ")
    (d,) = streamvae("config", "check", str(tmp_path / "missing.toml"), STREAMVAE_LOG__FORMAT="json")
    assert d["level"] == "ERROR" and d["event"].startswith("streamvae: error: cannot read config")
