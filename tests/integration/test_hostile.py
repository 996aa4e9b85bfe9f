"""Hostile input on the real broker (issue 14): every record that used to kill the daemon,
poison an entity's clock or stay silent, sent to a running daemon. It stays alive, each
bad record becomes exactly one dead letter with its reason (and not again after a
restart), the good readings around them are scored and absurd values alert."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness import FEATURES, T0, WINDOW, DaemonProc, Env, series

LONG = b"1" + b"0" * 399  # an integer literal of 400 digits
ABSURD = [10.0 ** k for k in range(3, 38)] + [3.0e38]  # on feature "b", whose training range is a few units


def poison(now: float) -> list[tuple[str | None, bytes, str]]:
    """(key, value, reason) of every record issue 14 found harmful, keyed to pump-0's partition
    where a key fits."""
    late_offset = datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=timezone(-timedelta(hours=23, minutes=59)))
    one = lambda **kw: json.dumps({"entity": "pump-0", "ts": T0, "values": {"a": 1.0}, **kw}).encode()  # noqa: E731
    return [
        (None, b"[" * 5000 + b"]" * 5000, "too_deep"),
        ("pump-0", b'{"entity": "pump-0", "ts": 1, "values": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}", "too_deep"),
        ("pump-0", b'{"entity": "pump-0", "ts": 1, "values": {"a": ' + LONG + b"}}", "out_of_range"),
        ("pump-0", b'{"entity": "pump-0", "ts": ' + LONG + b', "values": {"a": 1}}', "bad_ts"),
        ("pump-0", b"x" * 900_000, "not_json"),  # its dead letter would not fit unless cut
        ("pump-0", b'{"entity": "pump-0", "pad": "' + b"y" * 1_000_000 + b'"}', "too_large"),
        (None, b'{"entity": "pump\\ud800", "ts": 1, "values": {"a": 1}}', "bad_entity"),
        (None, b'{"entity": "pump\\u0000", "ts": 1, "values": {"a": 1}}', "bad_entity"),
        ("pump-0", b'{"entity": "pump-0", "ts": 1, "values": {"a": "\xff\xfe"}}', "not_utf8"),
        ("pump-0", one(ts=4e9), "ts_in_future"),
        ("pump-0", one(ts=1e300), "ts_in_future"),
        ("pump-0", one(ts="9999-12-31T23:59:59Z"), "ts_in_future"),
        ("pump-0", one(ts=late_offset.isoformat()), "ts_in_future"),
        ("pump-0", one(values={"a": 1e39}), "out_of_range"),
    ]


def read_dlq(env: Env) -> list[dict[str, Any]]:
    return env.read(env.dlq)


def test_poison_records_never_stop_the_daemon_and_each_is_dead_lettered_once(kenv: Env, model_dir: Path, tmp_path: Path,
                                                                              daemons: list[DaemonProc]) -> None:
    cfg = kenv.config(tmp_path, model_dir)
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    bad = poison(time.time())
    x = series(300, seed=7)
    for i in range(100):  # pump-0: good readings before the poison ...
        kenv.send_reading("pump-0", T0 + i, x[i])
    for key, value, _ in bad:
        kenv.send(key, value)
    for i in range(100, 280):  # ... and after: its clock was not moved by the readings from the future
        kenv.send_reading("pump-0", T0 + i, x[i])
    # a block of 1,000 readings with one bad item: one dead letter listing it, the rest scored
    block = [{"ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))} for i, row in enumerate(series(1000, seed=8))]
    block[500]["values"]["a"] = "hot"  # type: ignore[assignment]
    kenv.send("block-1", json.dumps({"entity": "block-1", "readings": block}).encode())
    # absurd values, one entity per magnitude: one reading of each in an otherwise normal series
    for k, v in enumerate(ABSURD):
        y = series(100, seed=20 + k)
        y[60, 1] = v
        for i in range(100):
            kenv.send_reading(f"absurd-{k}", T0 + i, y[i])
    # the tail: two more poison records with fewer than W readings after them, so a restart
    # re-reads them (their open window pins the committed position before them)
    tail = [("pump-0", b"{not json", "not_json"), ("pump-0", b'{"entity": "pump-0", "ts": 1, "values": {"a": ' + LONG + b"}}",
                                                  "out_of_range")]
    for key, value, _ in tail:
        kenv.send(key, value)
    for i in range(280, 290):
        kenv.send_reading("pump-0", T0 + i, x[i])
    kenv.flush()
    kenv.wait_caught_up(daemon=d, timeout=180)
    d.check_alive()

    dlq = read_dlq(kenv)
    expected = Counter(r for _, _, r in bad + tail) + Counter({"bad_value": 1})
    assert Counter(m["reason"] for m in dlq) == expected
    assert len({(m["partition"], m["offset"]) for m in dlq}) == len(dlq)  # one dead letter per record
    sent = {hashlib.sha256(v).hexdigest() for _, v, _ in bad + tail}
    for m in dlq:
        assert len(json.dumps(m, separators=(",", ":"))) <= 1_000_000
        if m["reason"] != "bad_value":
            assert m["value_sha256"] in sent, m["reason"]
    blk = [m for m in dlq if m["reason"] == "bad_value"][0]
    assert blk["items_total"] == 1 and blk["items"][0]["index"] == 500

    # every good reading scored: pump-0's 290, the block's 999, each absurd entity's 100
    assert d.metric("windows_scored_total") == (290 - WINDOW + 1) + (999 - WINDOW + 1) + len(ABSURD) * (100 - WINDOW + 1)
    alerts = kenv.read(kenv.alerts)
    opened = {a["entity"]: a for a in alerts if a["kind"] == "open"}
    missed = [(k, v) for k, v in enumerate(ABSURD) if f"absurd-{k}" not in opened]
    assert missed == [], f"absurd values without an alert: {missed}"
    assert all(opened[f"absurd-{k}"]["features"][0]["name"] == "b" for k in range(len(ABSURD)))

    # SIGKILL after the commit, restart: the re-read records are not dead-lettered again
    d.kill()
    d2 = DaemonProc(cfg, tmp_path / "daemon2.log")
    daemons.append(d2)
    deadline = time.monotonic() + 60
    while d2.metric("records_rebuilt_total") == 0:
        assert time.monotonic() < deadline, d2.log_tail()
        time.sleep(0.5)
    kenv.wait_caught_up(daemon=d2)
    assert d2.metric("dead_letters_total") == 0
    assert Counter(m["reason"] for m in read_dlq(kenv)) == expected


def test_hostile_input_leaves_resident_memory_within_5_percent_of_a_clean_run(broker: Any) -> None:
    """scripts/bench_memory.py on the session broker: clean and hostile runs alternate
    three times each (40,000 good records; the hostile runs add issue 14's cases:
    records of 40,000 unknown feature names, a block of 5,000 readings, the poison
    records, absurd values); the medians of their resident memory are compared."""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "scripts" / "bench_memory.py"), "--bootstrap", broker.bootstrap],
                       capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["daemon_exits_nonzero"] == 0
    assert out["hostile_dead_letters"] == 11  # the poison records, once each
    assert out["rss_ratio"] <= 1.05, r.stdout
