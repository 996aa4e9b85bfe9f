"""The daemon end to end on the real broker: detection, dead letters, SIGTERM, SIGKILL (broker
outages: test_proof.py).

The fixtures come from harness.py (imported here rather than from a conftest.py, whose
module name would clash with tests/conftest.py). One real broker per session; if it
cannot start, the session FAILS: these tests never skip."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from streamvae.service.checkpoint import Checkpoint
from harness import FEATURES, T0, WINDOW, DaemonProc, Env, series

ANOMALIES = {  # entity -> (first reading, length, feature index, shift in noise-free units)
    "pump-1": (300, 40, 1, 3.0),
    "pump-3": (520, 40, 0, -3.0),
    "pump-4": (700, 30, 3, 3.5),
}


def produce_feed(env: Env, n: int = 900, entities: int = 6, start: int = 0, stop: int | None = None) -> None:
    """Readings ``start..stop`` of every entity, interleaved in time order, anomalies injected."""
    data = {}
    for e in range(entities):
        name = f"pump-{e}"
        x = series(n, seed=100 + e)
        if name in ANOMALIES:
            a, length, f, d = ANOMALIES[name]
            x[a : a + length, f] += d
        data[name] = x
    for i in range(start, n if stop is None else stop):
        for name, x in data.items():
            env.send_reading(name, T0 + i, x[i])
    env.flush()


def opens(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        if a["kind"] == "open":
            out.setdefault(a["entity"], []).append(a)
    return out


def check_detection(alerts: list[dict[str, Any]]) -> None:
    """Every injected anomaly has an open alert inside its span naming the right feature first."""
    got = opens(alerts)
    for ent, (a, length, f, _) in ANOMALIES.items():
        hits = [o for o in got.get(ent, []) if T0 + a <= o["window_end"] <= T0 + a + length + WINDOW]
        assert hits, f"injected anomaly on {ent} at {a} not alerted; opens: {got.get(ent)}"
        assert hits[0]["features"][0]["name"] == FEATURES[f], hits[0]
    false_eps = sum(len(v) for k, v in got.items() if k not in ANOMALIES)
    assert false_eps <= 1, f"false episodes on normal entities: {[(k, len(v)) for k, v in got.items() if k not in ANOMALIES]}"


def test_end_to_end_detects_injected_anomalies(kenv: Env, model_dir: Path, tmp_path: Path, daemons: list[DaemonProc]) -> None:
    d = DaemonProc(kenv.config(tmp_path, model_dir), tmp_path / "daemon.log")
    daemons.append(d)
    produce_feed(kenv)
    kenv.wait_caught_up(daemon=d)
    # every reading was windowed and scored: (900 - W + 1) windows per entity
    assert d.metric("windows_scored_total") == 6 * (900 - WINDOW + 1)
    alerts = kenv.read(kenv.alerts)
    check_detection(alerts)
    for a in alerts:  # the DESIGN.md alert schema
        assert {"alert_id", "kind", "entity", "window_start", "window_end", "score", "threshold", "model_version",
                "features", "episode_id", "detected_at"} <= set(a)
        assert a["kind"] in ("open", "update", "close")
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    # one episode per fault, not one alert per flagged window: open, at most two updates, close
    got = opens(alerts)
    for ent, (a, length, _, _) in ANOMALIES.items():
        eps = {o["episode_id"] for o in got[ent] if T0 + a <= o["window_end"] <= T0 + a + length + WINDOW}
        assert len(eps) == 1, (ent, got[ent])
        assert sum(1 for x in alerts if x["episode_id"] in eps) <= 4, [x for x in alerts if x["episode_id"] in eps]


BAD: list[tuple[str | None, bytes, str]] = [
    ("pump-0", b"{not json", "not_json"),
    ("pump-0", b"[1, 2, 3]", "not_object"),
    (None, json.dumps({"ts": T0, "values": {"a": 1.0}}).encode(), "missing_entity"),
    ("pump-0", json.dumps({"entity": "pump-0", "values": {"a": 1.0}}).encode(), "missing_ts"),
    ("pump-0", json.dumps({"entity": "pump-0", "ts": "yesterday", "values": {"a": 1.0}}).encode(), "bad_ts"),
    ("pump-0", json.dumps({"entity": "pump-0", "ts": T0, "values": {"a": "hot"}}).encode(), "bad_value"),
    ("pump-0", b'{"entity": "pump-0", "ts": 1700000000, "values": {"a": 1e999}}', "non_finite"),
    ("pump-0", json.dumps({"entity": "pump-0", "ts": T0, "values": [1, 2]}).encode(), "bad_values"),
    ("pump-0", json.dumps({"entity": 17, "ts": T0, "values": {"a": 1.0}}).encode(), "bad_entity"),
    ("pump-0", json.dumps({"entity": "pump-9", "ts": T0, "values": {"a": 1.0}}).encode(), "entity_key_mismatch"),
    ("pump-9", json.dumps({"entity": "pump-9", "ts": T0, "values": {"a": 1.0}}).encode(), "unknown_entity"),
    ("pump-0", json.dumps({"entity": "pump-0", "ts": T0, "values": {"zzz": 1.0}}).encode(), "no_known_feature"),
    ("pump-0", b'{"entity": "pump-0", "ts": 1, "values": {"a": 1.0}, "pad": "' + b"x" * 5000 + b'"}', "too_large"),
]


def test_every_bad_record_is_dead_lettered_with_its_reason(kenv: Env, model_dir: Path, tmp_path: Path,
                                                          daemons: list[DaemonProc]) -> None:
    cfg = kenv.config(tmp_path, model_dir, records__max_record_bytes=4096, records__entities=["pump-0", "pump-1"])
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    x = series(200, seed=5)
    for i in range(100):  # good readings before ...
        kenv.send_reading("pump-0", T0 + i, x[i])
    for key, value, _ in BAD:  # ... the bad ones ...
        kenv.send(key, value)
    for i in range(100, 200):  # ... and after
        kenv.send_reading("pump-0", T0 + i, x[i])
    kenv.flush()
    kenv.wait_caught_up(daemon=d)
    dlq = kenv.read(kenv.dlq)
    got = Counter(m["reason"] for m in dlq)
    assert got == Counter(reason for _, _, reason in BAD), got
    by_reason = {m["reason"]: m for m in dlq}
    for key, value, reason in BAD:  # the original bytes, and where they came from
        m = by_reason[reason]
        assert base64.b64decode(m["value_b64"]) == value
        assert m["topic"] == kenv.input and m["offset"] >= 0 and m["message"]
    # the good readings around them were all scored: 200 readings -> 200 - W + 1 windows
    assert d.metric("windows_scored_total") == 200 - WINDOW + 1
    assert d.metric("dead_letters_total") == len(BAD)


def test_sigterm_finishes_the_batch_commits_and_exits_zero(kenv: Env, model_dir: Path, tmp_path: Path,
                                                         daemons: list[DaemonProc]) -> None:
    state = tmp_path / "state.npz"
    cfg = kenv.config(tmp_path, model_dir, threshold__state_file=str(state), threshold__min_history=100)
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    produce_feed(kenv, n=400)
    kenv.wait_caught_up(daemon=d)
    t0 = time.monotonic()
    assert d.terminate(timeout=15) == 0, d.log_tail()
    assert time.monotonic() - t0 < 5.0, "SIGTERM took too long"
    # what the thresholds learned survives the restart, with the positions it is as of
    saved = Checkpoint.from_file(state)
    assert saved.pipeline["bank"]["own"], "no per-entity tracker was saved"
    assert {p for _, p in saved.positions} == set(kenv.end_offsets())
    d2 = DaemonProc(cfg, tmp_path / "daemon2.log")
    daemons.append(d2)
    assert "state restored" in d2.log_tail(200)
    assert d2.terminate(timeout=15) == 0
    ends, com = kenv.end_offsets(), kenv.committed()
    for p, end in ends.items():
        offset, meta = com[p]
        assert meta["scored_to"] == end
        assert end - (WINDOW - 1) * 6 <= offset <= end  # the oldest reading an open window needs


def test_sigkill_then_restart_misses_nothing_and_repeats_no_alert(kenv: Env, model_dir: Path, tmp_path: Path,
                                                                daemons: list[DaemonProc]) -> None:
    cfg = kenv.config(tmp_path, model_dir, group__max_poll_records=150)
    produce_feed(kenv)  # the whole feed is waiting; the daemon works through it in small polls
    d = DaemonProc(cfg, tmp_path / "daemon1.log")
    daemons.append(d)
    deadline = time.monotonic() + 120
    # Kill it about half way, mid-stream, by the records it has processed: its commits
    # come at most every group.commit_interval_ms (1 s), so at the kill the committed
    # position lags what it scored and alerted, and the restart reads that part again.
    while d.metric("records_total") < 0.45 * 6 * 900:
        d.check_alive()
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.02)
    d.kill()
    frac = kenv.scored_fraction()
    assert frac < 1.0, "the daemon finished before it could be killed; the test proves nothing"
    d2 = DaemonProc(cfg, tmp_path / "daemon2.log")
    daemons.append(d2)
    kenv.wait_caught_up(daemon=d2)
    alerts = kenv.read(kenv.alerts)
    ids = Counter(a["alert_id"] for a in alerts)
    dups = [k for k, n in ids.items() if n > 1]
    assert not dups, f"duplicate alert ids after the restart: {dups}"
    check_detection(alerts)
    assert d2.metric("records_rebuilt_total") > 0  # the restart rebuilt open windows without re-scoring them


def test_a_feed_that_turns_bad_raises_one_alarm_and_nothing_is_dropped(kenv: Env, model_dir: Path, tmp_path: Path,
                                                                      daemons: list[DaemonProc]) -> None:
    # the dead-letter guard (issue 16): an upstream schema change makes most records bad
    cfg = kenv.config(tmp_path, model_dir, records__reject_window=200, records__reject_share=0.5)
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    x = series(1200, seed=6)
    for i in range(200):
        kenv.send_reading("pump-0", T0 + i, x[i])
    for i in range(600):  # the new schema: "value" for "values"
        kenv.send("pump-0", json.dumps({"entity": "pump-0", "ts": T0 + 200 + i, "value": {"a": 1.0}}).encode())
    for i in range(200, 1200):  # fixed upstream; the guard judges whole polls (500 records here)
        kenv.send_reading("pump-0", T0 + 600 + i, x[i])
    kenv.flush()
    kenv.wait_caught_up(daemon=d)
    alarms = [a for a in kenv.read(kenv.alerts) if a["kind"] == "input_rejected"]
    assert len(alarms) == 1, alarms
    a = alarms[0]
    assert a["topic"] == kenv.input and a["refused_share"] > 0.5 and a["dead_letter_topic"] == kenv.dlq
    assert len(kenv.read(kenv.dlq)) == 600  # every bad record still dead-lettered, with its reason
    assert d.metric("input_rejected_episodes_total") == 1 and d.metric("input_rejected") == 0  # and it recovered
    assert d.metric("windows_scored_total") > 0
    d.check_alive()
    assert "input rejected:" in d.log_tail(400)


def test_a_backlog_read_to_its_end_is_committed_at_once(kenv: Env, model_dir: Path, tmp_path: Path,
                                                        daemons: list[DaemonProc]) -> None:
    """Commits come at most every commit_interval_ms while records flow, and with an empty
    poll; a backlog's end is committed as soon as it is read. Here neither the interval
    (10 min) nor an empty poll (60 s) comes within the wait, so only that commit can
    bring the group's position to the end of every partition."""
    produce_feed(kenv, n=150)  # 900 records before the daemon starts: a backlog of 9+ full polls
    cfg = kenv.config(tmp_path, model_dir, group__max_poll_records=100, group__commit_interval_ms=600_000,
                      group__poll_timeout_ms=60_000)
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    kenv.wait_caught_up(daemon=d, timeout=30)
    assert d.metric("batches_total") >= 9  # every poll full, but perhaps the last
    d.kill()  # its shutdown would commit too; what is committed now came while it ran


def test_what_a_drained_backlog_taught_is_saved_when_the_feed_goes_quiet(kenv: Env, model_dir: Path, tmp_path: Path,
                                                                         daemons: list[DaemonProc]) -> None:
    """A backlog's end is committed at once, before a checkpoint is due (save_every 1 s).
    The state learned since the last checkpoint is then saved at an empty poll once one is
    due, as it is when a commit waits: else it stayed unsaved until the next record came,
    and a SIGKILL in a quiet spell made the restart read it all again."""
    produce_feed(kenv, n=150)  # 900 records: read within a second here
    state = tmp_path / "state.npz"
    cfg = kenv.config(tmp_path, model_dir, group__max_poll_records=100, group__commit_interval_ms=600_000,
                      threshold__state_file=str(state), threshold__save_every=1.0)
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    kenv.wait_caught_up(daemon=d, timeout=30)
    ends = kenv.end_offsets()

    def learned() -> dict[int, int]:
        positions = Checkpoint.from_file(state).positions if state.exists() else {}
        return {p: positions.get((kenv.input, p), (0, -1))[1] for p in ends}

    deadline = time.monotonic() + 15
    while learned() != ends and time.monotonic() < deadline:
        time.sleep(0.2)
    d.kill()  # its shutdown would checkpoint too; what is saved now came while it ran
    assert learned() == ends
