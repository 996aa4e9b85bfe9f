"""Hot swap on the real broker: two `streamvae run` daemons in ONE consumer group serve a
registry; `streamvae models promote/rollback --config` moves both, between two batches.

Records flow the whole time (a feeder thread, one partition per daemon). The delay from
the promotion (the HISTORY entry written with CURRENT) to each daemon reporting the new
version on /healthz is measured and printed (run with -s to see it); the target is 10 s.

Fixtures come from harness.py (imported here rather than from a conftest.py, whose module
name would clash with tests/conftest.py). The broker never skips: if it cannot start, the
session fails.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from harness import FEATURES, T0, DaemonProc, Env, series, streamvae_cmd

from streamvae.config import KafkaConfig
from streamvae.kafka.control import control_event, publish_control
from streamvae.registry import Registry

V1, V2, V3 = "2026-01-01T00-00-00Z-0001", "2026-01-02T00-00-00Z-0002", "2026-01-03T00-00-00Z-0003"
ENTITIES = [f"pump-{i}" for i in range(6)]
STEPS_PER_S = 40  # feeder pace: readings per entity per wall second (event time: 1 s per reading)
SWAP_TARGET_S = 10.0


class Feeder(threading.Thread):
    """Normal readings of every entity, paced, entity i on partition i % 2; anomalies on request."""

    def __init__(self, env: Env) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.data = {e: series(20_000, seed=300 + i) for i, e in enumerate(ENTITIES)}
        self.step = 0
        self.shift: dict[str, tuple[int, int, int, float]] = {}  # entity -> (from step, to step, feature, delta)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def inject(self, entity: str, feature: int, delta: float, length: int) -> int:
        """Shift ``feature`` of ``entity`` from the next step on; the event time of its first reading."""
        with self.lock:
            first = self.step + 1
            self.shift[entity] = (first, first + length, feature, delta)
        return T0 + first

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_event.is_set() and self.step < 19_999:
            with self.lock:
                self.step += 1
                i = self.step
                shift = dict(self.shift)
            for n, e in enumerate(ENTITIES):
                row = self.data[e][i].copy()
                s = shift.get(e)
                if s is not None and s[0] <= i < s[1]:
                    row[s[2]] += s[3]
                rec = {"entity": e, "ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))}
                self.env.producer.send(self.env.input, key=e.encode(), value=json.dumps(rec).encode(), partition=n % 2)
            self.stop_event.wait(max(0.0, t0 + i / STEPS_PER_S - time.monotonic()))


def health(d: DaemonProc) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/healthz", timeout=2).read())
    return out


def wait_serving(daemons: list[DaemonProc], version: str, timeout: float) -> list[float]:
    """Wall time at which each daemon first reported ``version``; AssertionError after ``timeout``."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(daemons) and time.monotonic() < deadline:
        for i, d in enumerate(daemons):
            d.check_alive()
            if i not in seen and health(d)["model_version"] == version:
                seen[i] = time.time()
        time.sleep(0.05)
    assert len(seen) == len(daemons), (f"after {timeout}s only daemons {sorted(seen)} serve {version}: "
                                       f"{[health(d) for d in daemons]}\n" + "\n".join(d.log_tail(15) for d in daemons))
    return [seen[i] for i in range(len(daemons))]


def models_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*streamvae_cmd(), "models", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Group:
    """Two daemons, a registry with V1 (CURRENT), V2 and V3, and records flowing."""

    def __init__(self, env: Env, reg: Registry, config: Path, daemons: list[DaemonProc], feeder: Feeder) -> None:
        self.env, self.reg, self.config, self.daemons, self.feeder = env, reg, config, daemons, feeder

    def promoted_at(self, version: str) -> float:
        """When CURRENT last became ``version`` (the HISTORY entry written with it)."""
        return float([h for h in self.reg.history() if h["version"] == version][-1]["at"])


@pytest.fixture(scope="module")
def group(broker: Any, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp = tmp_path_factory.mktemp("hot_swap")
    reg = Registry(tmp / "registry")
    for v in (V1, V2, V3):  # one trained model under three ids: enough to follow which one serves
        reg.add(model_dir, version=v)
    reg.promote(V1, reason="initial")
    env = Env(broker.bootstrap, partitions=2)
    config = env.config(tmp, reg.root)
    started: list[DaemonProc] = []
    feeder = Feeder(env)
    try:
        with ThreadPoolExecutor(2) as pool:  # start both at once: each imports TensorFlow
            started += pool.map(lambda i: DaemonProc(config, tmp / f"daemon-{i}.log"), range(2))
        feeder.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(d.metric("windows_scored_total") for d in started) < 600:
            time.sleep(0.3)
        assert min(d.metric("windows_scored_total") for d in started) >= 600, \
            "both daemons must be scoring before the test starts\n" + "\n".join(d.log_tail(20) for d in started)
        yield Group(env, reg, config, started, feeder)
    finally:
        feeder.stop_event.set()
        if feeder.is_alive():
            feeder.join(5)
        for d in started:
            d.close()
        env.close()


def test_promote_then_rollback_moves_both_daemons(group: Group, capsys: pytest.CaptureFixture[str]) -> None:
    ds = group.daemons
    assert [health(d)["model_version"] for d in ds] == [V1, V1]
    t_cli = time.time()
    cli = models_cli("promote", V2, "--config", str(group.config), "--reason", "test")
    served_v2 = wait_serving(ds, V2, timeout=60)  # the CLI itself needs ~10 s (it imports TensorFlow to verify)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert f"promoted {V2} (was {V1})" in out and "published" in out
    promote_delays = [t - group.promoted_at(V2) for t in served_v2]
    assert max(promote_delays) <= SWAP_TARGET_S, promote_delays
    for d in ds:
        assert d.metric("model_swaps_total") == 1
        assert d.metric("model_swap_failures_total") == 0
        assert d.metric("model_info") == 1  # the old version's gauge is 0, the new one's 1
    both_on_v2 = max(served_v2)

    # alerts produced after the swap carry V2 (one anomaly per daemon's partition)
    first = max(group.feeder.inject("pump-1", 1, 3.0, 40), group.feeder.inject("pump-2", 0, -3.0, 40))
    deadline = time.monotonic() + 30
    fresh: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not {"pump-1", "pump-2"} <= {a["entity"] for a in fresh}:
        time.sleep(1.0)
        fresh = [a for a in group.env.read(group.env.alerts, idle_ms=1000)
                 if a["kind"] == "open" and a["window_end"] >= first]
    assert {"pump-1", "pump-2"} <= {a["entity"] for a in fresh}, fresh
    after = [a for a in group.env.read(group.env.alerts, idle_ms=1000) if a["detected_at"] > both_on_v2]
    assert after and all(a["model_version"] == V2 for a in after), [(a["entity"], a["model_version"]) for a in after]

    cli = models_cli("rollback", "--config", str(group.config))
    served = wait_serving(ds, V1, timeout=60)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert f"rolled back to {V1} (was {V2})" in out
    rollback_delays = [t - group.promoted_at(V1) for t in served]
    assert max(rollback_delays) <= SWAP_TARGET_S, rollback_delays
    assert group.reg.current() == V1
    with capsys.disabled():
        print(f"\npromotion -> serving V2: {[round(x, 2) for x in promote_delays]} s "
              f"(from the CLI's start: {[round(t - t_cli, 2) for t in served_v2]} s); "
              f"rollback -> serving V1: {[round(x, 2) for x in rollback_delays]} s")


def test_corrupt_version_leaves_the_old_one_serving(group: Group) -> None:
    ds = group.daemons
    assert [health(d)["model_version"] for d in ds] == [V1, V1] or wait_serving(ds, V1, timeout=10)
    failures = [d.metric("model_swap_failures_total") for d in ds]
    weights = group.reg.path(V3) / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # promote by hand, bypassing the verification `models promote` would do
    (group.reg.root / "CURRENT").write_text(V3 + "\n")
    publish_control(KafkaConfig(bootstrap_servers=group.env.bootstrap), group.env.control,
                    control_event("promote", V3, V1, "corrupt on purpose"))
    deadline = time.monotonic() + SWAP_TARGET_S
    while time.monotonic() < deadline and any(d.metric("model_swap_failures_total") <= f for d, f in zip(ds, failures)):
        time.sleep(0.1)
    assert all(d.metric("model_swap_failures_total") == f + 1 for d, f in zip(ds, failures)), \
        "\n".join(d.log_tail(15) for d in ds)
    scored = [d.metric("windows_scored_total") for d in ds]
    time.sleep(2.0)
    for d, n in zip(ds, scored):
        assert health(d)["model_version"] == V1
        assert d.metric("windows_scored_total") > n  # still scoring, with the old model
        assert "checksum mismatch on weights.npz" in d.log_tail(40)
    (group.reg.root / "CURRENT").write_text(V1 + "\n")
