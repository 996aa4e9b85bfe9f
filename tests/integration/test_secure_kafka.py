"""Secured Kafka on the real broker (issue 18, item 4; the redaction check of item 3).

One ``LocalBroker(secure=True)`` for the module: a SASL_SSL listener with the run's own CA
(keytool), PLAIN users in server.properties, SCRAM users made through the admin API.

- With the right credentials, ``streamvae simulate`` produces, the daemon (``streamvae
  run``) consumes and publishes alerts, and ``streamvae alerts`` reads them: SCRAM-SHA-512,
  and PLAIN in the redaction run. The tools take the TLS / SASL settings from
  ``STREAMVAE_KAFKA__*`` (what ``scripts/kafka start --secure`` writes to source).
- With a wrong password, and with a CA that did not sign the broker's certificate, each of
  the daemon, simulate and alerts exits non-zero within ``FAIL_FAST_S`` with one line on
  stderr naming the cause, no traceback, none of kafka-python's retry lines.
- A daemon run at DEBUG (startup, processing, shutdown) with the SASL password in its
  config, and ``streamvae config check``, never show the password (kafka-python at DEBUG
  logs SASL PLAIN's request bytes and an admin client's whole configuration: masked by
  streamvae.kafka.clients.RedactSecrets on kafka-python's loggers, and by the log
  handler's redactor of service/logs.py, each on its own).

The figures (elapsed seconds of each failure) are printed (``pytest -s``). This module
never skips: a broker that cannot start fails it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from streamvae.config import KafkaConfig
from streamvae.kafka.clients import create_topic
from streamvae.offline.feed import write_training_csvs
from streamvae.testing.broker import broker_module
from streamvae.testing.procs import DaemonProc, run_cmd, streamvae_cmd, write_config

from harness import started_broker

FAIL_FAST_S = 30.0  # the bound on a refused start
KAFKA_PYTHON_LINE = re.compile(r'(DEBUG|INFO|WARNING|ERROR|CRITICAL) kafka\.|"logger": ?"kafka\.')  # text or JSON logs
ENTITIES, RATE, DURATION = 2, 4.0, 240.0  # simulate: 960 readings, one per entity every 0.5 s


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    yield from started_broker(secure=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model on simulate's plant (its feature names); what it detects does not
    matter here: the daemon runs a fixed threshold below every score."""
    d = tmp_path_factory.mktemp("secure-model")
    csvs = write_training_csvs(d / "train", entities=1, seconds=900, interval=ENTITIES / RATE, seed=3)
    cmd = [*streamvae_cmd(), "train", *(x for c in csvs for x in ("--csv", str(c))), "--out", str(d / "model"),
           "--window", "8", "--encoder", "16", "--latent", "2", "--epochs", "3", "--seed", "1", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "model"


@pytest.fixture(scope="module")
def other_ca(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA of its own: it did not sign the broker's certificate."""
    return Path(broker_module().make_ca(tmp_path_factory.mktemp("other-ca"), "changeit", "some other CA"))


def kafka_settings(broker: Any, mechanism: str = "SCRAM-SHA-512", **over: Any) -> dict[str, Any]:
    """The ``[kafka]`` section for the broker's client user."""
    c = broker.credentials
    return {"bootstrap_servers": broker.bootstrap, "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
            "sasl_username": c.client_user, "sasl_password": c.client_password, "ssl_cafile": str(c.ca_pem), **over}


def tool_env(settings: dict[str, Any]) -> dict[str, str]:
    """This environment, the ``[kafka]`` settings as ``STREAMVAE_KAFKA__*`` (and no others)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMVAE_KAFKA__")}
    env.update({f"STREAMVAE_KAFKA__{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Run:
    """uuid-named topics (input with 2 partitions, alerts, dead letters) and a daemon config."""

    def __init__(self, broker: Any, settings: dict[str, Any]) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings = settings
        self.input, self.alerts, self.dlq, self.group = f"sensors-{tag}", f"alerts-{tag}", f"dlq-{tag}", f"g-{tag}"
        k = KafkaConfig(**settings)
        for topic, n in ((self.input, 2), (self.alerts, 1), (self.dlq, 1)):
            create_topic(k, topic, n)

    def config(self, path: Path, model: Path, **kafka_over: Any) -> Path:
        return write_config(path, {
            "kafka": {**self.settings, **kafka_over},
            "topics": {"input": self.input, "alerts": self.alerts, "dead_letter": self.dlq,
                       "control": f"control-{self.group}"},
            "group": {"id": self.group, "session_timeout_ms": 6000},
            "model": {"path": str(model)},
            "threshold": {"kind": "fixed", "value": -1e30},  # every window flagged: alerts for sure
            "episodes": {"open_after": 2, "accept": False},
        })  # fmt: skip

    def simulate(self, env: dict[str, str], *debug: str) -> subprocess.CompletedProcess[str]:
        cmd = [*streamvae_cmd(), *debug, "simulate", "--bootstrap", self.settings["bootstrap_servers"], "--topic", self.input,
               "--entities", str(ENTITIES), "--rate", str(RATE), "--duration", str(DURATION), "--as-fast-as-possible"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    def read_alerts(self, env: dict[str, str], *debug: str) -> subprocess.CompletedProcess[str]:
        cmd = [*streamvae_cmd(), *debug, "alerts", "--bootstrap", self.settings["bootstrap_servers"], "--topic", self.alerts, "--json"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    def wait_alerts(self, env: dict[str, str], daemon: DaemonProc, *debug: str, timeout: float = 120.0) -> tuple[list[dict[str, Any]], str]:
        """``streamvae alerts`` until every entity has an open alert: (the alerts, its last stderr)."""
        deadline = time.monotonic() + timeout
        while True:
            daemon.check_alive()
            r = self.read_alerts(env, *debug)
            assert r.returncode == 0, r.stderr[-3000:]
            got = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
            if len({a["entity"] for a in got if a.get("kind") == "open"}) == ENTITIES:
                return got, r.stderr
            assert time.monotonic() < deadline, f"no open alert for every entity in {timeout:g}s: {got}\n{daemon.log_tail()}"
            time.sleep(1.0)


def test_simulate_daemon_and_alerts_work_with_scram_sha_512(broker: Any, model: Path, tmp_path: Path) -> None:
    settings = kafka_settings(broker, "SCRAM-SHA-512")
    run = Run(broker, settings)
    env = tool_env(settings)
    d = DaemonProc(run_cmd(run.config(tmp_path / "daemon.toml", model)), tmp_path / "daemon.log")
    try:
        d.wait_ready(90.0)
        sim = run.simulate(env)
        assert sim.returncode == 0, sim.stderr[-3000:]
        assert f"sent {int(RATE * DURATION)} records" in sim.stdout and "all acknowledged" in sim.stdout
        alerts, _ = run.wait_alerts(env, d)
        assert {a["kind"] for a in alerts} >= {"open"} and all(a["model_version"] for a in alerts)
        assert d.metric("windows_scored_total") > 0
        assert d.stop(30.0) == 0, d.log_tail()
    finally:
        d.close()


def _one_line_failure(cmd: list[str], env: dict[str, str] | None, words: list[str]) -> float:
    """Run ``cmd``; assert it exits non-zero within FAIL_FAST_S with one line naming the
    cause (``words``) as its last line on stderr, no traceback, no kafka-python line; its seconds."""
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert elapsed < FAIL_FAST_S, f"took {elapsed:.1f}s:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not [ln for ln in lines if KAFKA_PYTHON_LINE.search(ln)], r.stderr[-3000:]  # its retries stay quiet
    assert lines and all(w in lines[-1] for w in words), r.stderr[-3000:]
    assert sum(1 for ln in lines if words[0] in ln) == 1, r.stderr[-3000:]
    assert lines[-1].startswith("streamvae: error: kafka: "), lines[-1]
    print(f"{' '.join(cmd[-6:])}: exit {r.returncode} after {elapsed:.1f}s: {lines[-1]}")
    return elapsed


def wrong(what: str, broker: Any, other_ca: Path) -> tuple[dict[str, Any], list[str]]:
    """The [kafka] settings changed for ``what``, and the words the one line must have."""
    if what == "password":
        return ({"sasl_password": "not-" + broker.credentials.client_password},
                ["authentication failed for user 'streamvae' (SASL SCRAM-SHA-512)", broker.bootstrap, "kafka.sasl_password"])
    return ({"ssl_cafile": str(other_ca)},
            ["the broker's certificate", broker.bootstrap, f"is not trusted (ssl_cafile {other_ca})", "self-signed certificate"])


@pytest.mark.parametrize("what", ["password", "untrusted CA"])
@pytest.mark.parametrize("command", ["run", "simulate", "alerts"])
def test_wrong_credentials_or_an_untrusted_ca_fail_fast_with_one_line(broker: Any, model: Path, other_ca: Path,
                                                                      tmp_path: Path, what: str, command: str) -> None:
    change, words = wrong(what, broker, other_ca)
    settings = kafka_settings(broker, **change)
    run = Run(broker, kafka_settings(broker))  # topics made with the right credentials
    env = tool_env(settings)
    if command == "run":
        cmd = run_cmd(run.config(tmp_path / "daemon.toml", model, **settings))
        env = tool_env({})
    elif command == "simulate":
        cmd = [*streamvae_cmd(), "simulate", "--bootstrap", broker.bootstrap, "--topic", run.input, "--duration", "10",
               "--as-fast-as-possible"]
    else:
        cmd = [*streamvae_cmd(), "alerts", "--bootstrap", broker.bootstrap, "--topic", run.alerts]
    _one_line_failure(cmd, env, words)


def test_the_sasl_password_appears_in_no_log_line(broker: Any, model: Path, tmp_path: Path) -> None:
    """PLAIN at DEBUG: the worst case (SASL PLAIN sends the password itself, and kafka-python
    logs each request and its bytes at DEBUG). Also the PLAIN case of the round trip."""
    settings = kafka_settings(broker, "PLAIN")
    secret = settings["sasl_password"]
    run = Run(broker, settings)
    env = tool_env(settings)
    cfg = run.config(tmp_path / "daemon.toml", model)
    assert secret in cfg.read_text()
    log = tmp_path / "daemon.log"
    d = DaemonProc([*streamvae_cmd(), "--debug", "run", "--config", str(cfg)], log, env=tool_env({}))
    try:
        d.wait_ready(90.0)
        sim = run.simulate(env, "--debug")
        assert sim.returncode == 0, sim.stderr[-3000:]
        alerts, alerts_err = run.wait_alerts(env, d, "--debug")
        assert alerts
        assert d.stop(30.0) == 0, d.log_tail()
    finally:
        d.close()
    check = subprocess.run([*streamvae_cmd(), "config", "check", str(cfg)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    text = log.read_text(errors="replace")
    # the run logged at DEBUG from start to end, kafka-python's SASL exchange included
    for seen in ("DEBUG kafka.", "SaslAuthenticateRequest", "consuming", "shutting down"):
        assert seen in text, f"{seen!r} not in the daemon's log"
    # SASL PLAIN's request (user, user, password) was logged, and the password masked in it
    assert [ln for ln in text.splitlines() if "SaslAuthenticateRequest" in ln and "***" in ln]
    for name, out in [("daemon", text), ("simulate", sim.stdout + sim.stderr), ("alerts", alerts_err),
                      ("config check", check.stdout + check.stderr)]:
        leaks = [ln for ln in out.splitlines() if secret in ln]
        assert not leaks, f"{name}: the SASL password in {len(leaks)} lines, e.g. {leaks[0][:300]}"
    assert '"sasl_password": "***"' in check.stdout
    print(f"daemon log at DEBUG: {len(text.splitlines())} lines, none with the password")
