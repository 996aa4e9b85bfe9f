"""/readyz follows the broker: a daemon on a broker of its own is ready, turns not ready
within ``http.ready_poll_age`` (plus slack) of the broker stopping while /healthz stays
200, and is ready again once the broker is back on the same port and data."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import T0, DaemonProc, Env, series

READY_AGE = 3.0
SLACK = 10.0  # the broker's shutdown closing sockets, a poll (0.2 s), an HTTP round trip


def probe(d: DaemonProc, path: str) -> tuple[int, dict[str, Any]]:
    """``path``'s status and JSON body (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(d: DaemonProc, code: int, timeout: float) -> tuple[float, dict[str, Any]]:
    """Until /readyz answers ``code``, /healthz answering 200 all the while; the seconds
    it took and /readyz's body then."""
    t0 = time.monotonic()
    while True:
        d.check_alive()
        health, hbody = probe(d, "/healthz")
        assert health == 200, f"/healthz {health}: {hbody}"
        got, body = probe(d, "/readyz")
        if got == code:
            return time.monotonic() - t0, body
        assert time.monotonic() - t0 < timeout, f"/readyz not {code} in {timeout:g}s: {got} {body}\n{d.log_tail(30)}"
        time.sleep(0.2)


def test_readyz_follows_the_broker_and_healthz_stays_up(own_broker: Any, model_dir: Path, tmp_path: Path,
                                                       daemons: list[DaemonProc]) -> None:
    env = Env(own_broker.bootstrap)
    try:
        d = DaemonProc(env.config(tmp_path, model_dir, http__ready_poll_age=READY_AGE), tmp_path / "daemon.log")
        daemons.append(d)
        x = series(40, seed=9)
        for i in range(40):
            env.send_reading("pump-0", T0 + i, x[i])
        env.flush()
        _, body = wait_for(d, 200, 90.0)
        assert body["ready"] and body["checks"]["partitions_assigned"]["assigned"] >= 1
        assert body["checks"]["model_loaded"]["model_version"] == d.healthz()["model_version"]

        own_broker.stop()
        took, body = wait_for(d, 503, READY_AGE + SLACK)
        failing = {k for k, c in body["checks"].items() if not c["ok"]}
        assert failing and failing <= {"broker_reachable", "recent_poll"}, body
        for k in failing:
            assert body["checks"][k]["why"], body
        # still down after ready_poll_age: the last poll that reached the broker is too old too
        time.sleep(READY_AGE + 1.0)
        code, body = probe(d, "/readyz")
        assert code == 503 and not body["checks"]["recent_poll"]["ok"], body
        assert "http.ready_poll_age = 3" in body["checks"]["recent_poll"]["why"]
        assert probe(d, "/healthz")[0] == 200

        own_broker.restart()
        back, body = wait_for(d, 200, 120.0)
        assert body["ready"], body
        print(f"\n/readyz 503 {took:.1f}s after the broker stopped; 200 again {back:.1f}s after it restarted")
        assert d.stop(30.0) == 0, d.log_tail()
    finally:
        env.close()
