"""``streamvae simulate`` / ``streamvae alerts`` without a broker: argument checks, one-line
errors when the broker cannot be reached, the alert line, duplicate dropping."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvae.cli import main
from streamvae.errors import ConfigError
from streamvae.core.bounded import BoundedSet
from streamvae.service.tools import format_alert, kafka_config

ALERT = {
    "alert_id": "a1", "kind": "update", "entity": "pump-03", "window_start": 1767225600.0, "window_end": 1767225660.5,
    "score": 80.4, "threshold": 97.3, "model_version": "v1",
    "features": [{"name": "rpm", "share": 0.5}, {"name": "flow", "share": 0.3}, {"name": "temp", "share": 0.1},
                 {"name": "voltage", "share": 0.1}],
    "episode_id": "0123456789abcdef", "detected_at": 1767225661.0,
}


def test_bootstrap_is_validated() -> None:
    assert kafka_config("127.0.0.1:9092, broker-2.local:19092").bootstrap_servers == "127.0.0.1:9092,broker-2.local:19092"
    assert kafka_config("[::1]:9092").bootstrap_servers == "[::1]:9092"
    for bad in ("", "localhost", "host:0", "host:99999", "host:port", "a:1,,b:2"):
        with pytest.raises(ConfigError, match="--bootstrap must be host:port"):
            kafka_config(bad)


def test_alert_line() -> None:
    line = format_alert(ALERT)
    assert line == "2026-01-01T00:01:00.500Z  UPDATE  pump-03  score 80.4 <= thr 97.3 (-16.9)  rpm 50% flow 30% temp 10%  ep 01234567"
    assert "\n" not in line
    odd = format_alert({"alert_id": "x", "kind": "close", "entity": "p", "window_end": "2026-01-01T00:00:00Z", "score": 1.0,
                        "threshold": None, "features": []})
    assert odd == "2026-01-01T00:00:00Z  CLOSE   p  score 1.0 (thr n/a)  -  ep ?"


def test_duplicates_are_dropped_and_memory_is_bounded() -> None:
    seen = BoundedSet(2)  # as `streamvae alerts` uses it: print an id not seen, then remember it

    def new(i: str) -> bool:
        if i in seen:
            return False
        seen.add(i)
        return True

    assert [new(i) for i in ("a", "b", "a", "c", "a")] == [True, True, False, True, True]  # "a" forgotten after "c"


@pytest.mark.parametrize("cmd", ["simulate", "alerts"])
def test_unreachable_broker_is_one_line_exit_2(cmd: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    extra = ["--truth", str(tmp_path / "t.json"), "--duration", "60"] if cmd == "simulate" else []
    assert main([cmd, "--bootstrap", "127.0.0.1:1", "--connect-timeout", "0.5", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamvae: error: cannot reach a Kafka broker at 127.0.0.1:1 within 0.5 s (KafkaTimeoutError); "
                   "is it running? (scripts/kafka start prints its address)"]
    assert not (tmp_path / "t.json").exists()  # no ground truth for a feed that was never sent


@pytest.mark.parametrize(
    "args, says",
    [
        (["simulate", "--bootstrap", "nohost"], "--bootstrap must be host:port"),
        (["simulate", "--bootstrap", "h:1", "--anomalies", "spike:0"], "anomaly spec 'spike:0': count of spike"),
        (["simulate", "--bootstrap", "h:1", "--speedup", "-1"], "--speedup must be a number > 0"),
        (["simulate", "--bootstrap", "h:1", "--rate", "0"], "rate must be a number"),
        (["alerts", "--bootstrap", "h", "--follow"], "--bootstrap must be host:port"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamvae: error: ") and says in err[0]


def test_speedup_and_as_fast_as_possible_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["simulate", "--bootstrap", "h:1", "--speedup", "2", "--as-fast-as-possible"])
    assert ex.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
