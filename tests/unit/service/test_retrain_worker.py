"""The daemon's retrain worker without a broker or TensorFlow: its child is a stub.

Time comes from a FakeClock; the child's verdict from its ``--result`` file, never from its
log; with ``retrain.buffer = "kafka"`` the windows that entered the buffers come back as
sample records carrying the fleet history, and a buffer rebuilt from them chooses the
same training windows as the worker's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamvae.config import Config, RetrainConfig, load_config
from streamvae.core.clock import FakeClock
from streamvae.core.episodes import Alert
from streamvae.core.pipeline import BatchResult, ScoredWindow
from streamvae.core.windows import Window
from streamvae.kafka.samples import decode_sample
from streamvae.lifecycle.loop import NORMAL_FILE, Lifecycle
from streamvae.lifecycle.samples import fill_from_samples
from streamvae.service.metrics import Metrics
from streamvae.service.retrain import RetrainWorker

W, F = 4, 2
FLEET = ["a", "b", "c", "d"]


def batch(t0: float, n: int, flagged: bool = False, alerts: tuple[str, ...] = ()) -> BatchResult:
    """``n`` seconds of the whole fleet from ``t0``; ``alerts``: kinds every entity sends at ``t0``."""
    sc = [ScoredWindow(e, t - W + 1, t, int(t), 100.0 + (t % 7), 200.0, flagged, None)
          for t in np.arange(t0, t0 + n, 1.0) for e in FLEET]
    normal = [] if flagged else [Window(s.entity, s.start_ts, s.end_ts, s.end_index, np.full((W, F), s.end_ts, np.float32))
                                 for s in sc]
    al = [Alert(f"{k}{e}{t0}", k, e, t0 - W + 1, t0, 300.0, 200.0, "v1", (), f"ep-{e}", t0, 300.0)
          for k in alerts for e in FLEET]
    return BatchResult(scored=sc, alerts=al, normal=normal, windows=np.stack([np.full((W, F), s.end_ts, np.float32) for s in sc]))


class StubChild:
    """A child that runs for ``ticks`` polls, writes ``log`` to its log and ``verdict`` to its result file."""

    def __init__(self, cmd: list[str], out: Any, ticks: int, rc: int, log: str, verdict: dict[str, Any] | None) -> None:
        self.cmd, self.left, self.rc, self.pid = cmd, ticks, rc, 4242
        self.result = Path(cmd[cmd.index("--result") + 1])
        out.write(log)
        self.verdict = verdict
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.left -= 1
        if self.left > 0:
            return None
        if self.verdict is not None and self.returncode is None:
            self.result.write_text(json.dumps(self.verdict))
        self.returncode = self.rc
        return self.rc


class Worker(RetrainWorker):
    child_plan: tuple[int, int, str, dict[str, Any] | None] = (2, 0, "", None)

    def _spawn(self, cmd: list[str], env: dict[str, str], out: Any) -> Any:
        self.cmds = [*getattr(self, "cmds", []), cmd]
        return StubChild(cmd, out, *self.child_plan)


def _cfg(tmp_path: Path, buffer: str = "local") -> tuple[Config, str]:
    path = tmp_path / "c.toml"
    path.write_text(f'[retrain]\nenabled = true\nbuffer = "{buffer}"\nstate_dir = "{tmp_path / "state"}"\n'
                    'min_windows = 50\nafter_windows = 50\nmin_interval = 100.0\nsample_every = 1\nmargin = 2.0\n'
                    'drift = "none"\n')
    return load_config(path), str(path)


def _verdict(result: str) -> dict[str, Any]:
    return {"result": result, "version": "v9", "summary": f"{result} v9", "gate": {"passed": result == "promoted"}}


@pytest.mark.parametrize(("plan", "want"), [
    ((3, 0, "promoted: a log line that says so\n", _verdict("rejected")), "rejected"),  # the file decides, not the log
    ((2, 0, "", _verdict("promoted")), "promoted"),
    ((2, 1, "", _verdict("promoted")), "failed"),  # a non-zero exit is a failure whatever the file says
    ((2, 0, "promoted\n", None), "failed"),  # no verdict file
])
def test_the_verdict_comes_from_the_result_file(tmp_path: Path, plan: Any, want: str) -> None:
    cfg, path = _cfg(tmp_path)
    clock = FakeClock(1000.0)
    metrics = Metrics()
    w = Worker(cfg, path, W, F, metrics, clock=clock)
    w.child_plan = plan
    w.tick()
    assert w.child is None  # nothing buffered: nothing due
    assert w.observe(batch(1000.0, 20), "v1") == []  # local buffer: nothing to publish
    clock.advance(20.0)
    w.tick()
    assert w.child is not None and metrics.get("retrain_running") == 1
    cmd = w.cmds[0]
    assert cmd[cmd.index("--seed") + 1] == "0" and cmd[cmd.index("--reason") + 1].startswith("after ")
    assert (tmp_path / "state" / NORMAL_FILE).is_file()  # exported right before the child started
    for _ in range(5):
        clock.advance(1.0)
        w.tick()
    assert w.child is None and metrics.get("retrains_total", result=want) == 1
    assert metrics.get("retrain_running") == 0
    trig = w.lifecycle.trigger
    assert trig is not None and trig.last_failed_ == (want != "promoted") and trig.running_ is False
    # one at a time, min_interval apart on the clock
    w.observe(batch(1021.0, 60), "v1")
    w.tick()
    assert w.child is None
    clock.advance(100.0)
    w.tick()
    assert w.child is not None and len(w.cmds) == 2


def test_kafka_samples_rebuild_the_same_training_windows(tmp_path: Path) -> None:
    """The records the worker returns (the daemon publishes them) fill a buffer elsewhere
    that chooses exactly the worker's own training windows, after a fleet-wide shift too."""
    cfg, path = _cfg(tmp_path, buffer="kafka")
    w = Worker(cfg, path, W, F, Metrics(), clock=FakeClock(0.0))
    records = []
    feed = [batch(0.0, 100), batch(100.0, 30, True, ("open",)), batch(130.0, 20, True),
            batch(150.0, 5, False, ("close",)), batch(155.0, 100)]
    for res in feed:
        records += w.observe(res, "v1")
    assert w.lifecycle.buffer.fleet_.starts_ == [100.0] and w.lifecycle.buffer.fleet_.ends_ == [150.0]
    assert {t for t, _, _ in records} == {cfg.topics.samples}
    decoded = [decode_sample(v) for _, _, v in records]
    assert "score" not in decoded[0] and decoded[-1]["fleet"]["starts"] == [100.0]
    anomalies = [r for r in decoded if r["kind"] == "anomaly"]  # every record reads back, anomalies too
    assert len(decoded) == len(records) and anomalies and {r["entity"] for r in anomalies} == set(FLEET)
    rebuilt = Lifecycle(cfg.retrain, W, F, trigger=False)
    fill_from_samples(rebuilt.buffer, rebuilt.bank, decoded)
    for mw in (50, 150, 10_000):
        mine, theirs = w.lifecycle.buffer.training_windows(mw), rebuilt.buffer.training_windows(mw)
        np.testing.assert_array_equal(mine[0], theirs[0])
        assert mine[1] == theirs[1]
    # ... and without the fleet history the rebuilt buffer would learn the old operating point too
    blind = Lifecycle(cfg.retrain, W, F, trigger=False)
    fill_from_samples(blind.buffer, blind.bank, [{k: v for k, v in r.items() if k != "fleet"} for r in decoded])
    assert len(blind.buffer.training_windows(50)[0]) > len(w.lifecycle.buffer.training_windows(50)[0])


def test_without_a_config_file_the_worker_only_buffers(tmp_path: Path) -> None:
    cfg = Config(retrain=RetrainConfig(enabled=True, min_windows=50, after_windows=1, min_interval=0.0, margin=0.0))
    w = Worker(cfg, None, W, F, Metrics(), clock=FakeClock(0.0))
    w.observe(batch(0.0, 100), "v1")
    w.tick()
    assert w.child is None and len(w.lifecycle.buffer) > 0 and w.lifecycle.trigger is None


def test_a_state_it_cannot_take_starts_the_buffers_empty(tmp_path: Path) -> None:
    cfg, path = _cfg(tmp_path)
    w = Worker(cfg, path, W, F, Metrics(), clock=FakeClock(0.0))
    w.observe(batch(0.0, 100), "v1")
    other = Worker(cfg, path, W + 1, F, Metrics(), clock=FakeClock(0.0))  # a model with another window
    other.restore(w.state())
    assert len(other.lifecycle.buffer) == 0 and other.lifecycle.trigger is not None
    same = Worker(cfg, path, W, F, Metrics(), clock=FakeClock(0.0))
    same.restore(w.state())
    assert len(same.lifecycle.buffer) == len(w.lifecycle.buffer) > 0


def test_a_model_swapped_in_behind_the_plant_brings_another_retrain(tmp_path: Path) -> None:
    cfg, path = _cfg(tmp_path)
    m = Metrics()
    clock = FakeClock(0.0)
    w = Worker(cfg, path, W, F, m, clock=clock)
    w.child_plan = (1, 0, "", _verdict("promoted"))
    w.observe(batch(0.0, 100), "v1")
    w.tick()  # after 50 new windows
    assert len(w.cmds) == 1
    w.observe(batch(100.0, 4), "v1")  # 16 windows the new model did not learn
    w.model_swapped(above_own=0.08)  # the swap comes before the verdict is read
    w.tick()
    assert w.child is None and m.registry.get_sample_value("streamvae_model_behind_plant") == 1.0
    clock.advance(100.0)
    w.observe(batch(104.0, 8), "v9")
    w.tick()  # 48 windows since: under max(50, min_windows / 4)
    assert len(w.cmds) == 1
    w.observe(batch(112.0, 1), "v9")
    w.tick()
    assert len(w.cmds) == 2 and "behind the plant" in w.cmds[1][w.cmds[1].index("--reason") + 1]
    w.tick()
    w.model_swapped(above_own=0.0)
    assert m.registry.get_sample_value("streamvae_model_behind_plant") == 0.0


def test_a_model_whose_first_windows_score_above_its_own_threshold_is_behind(tmp_path: Path) -> None:
    cfg, path = _cfg(tmp_path)
    m = Metrics()
    w = Worker(cfg, path, W, F, m, clock=FakeClock(0.0))
    w.model_swapped(above_own=0.0, own=105.5)  # the batches score 100-106: 1 in 7 above it
    assert w.lifecycle.trigger is not None and w.lifecycle.trigger.watching
    w.observe(batch(0.0, 2), "v1")  # 8 windows, none above; watched: the first min_windows x sample_every = 50
    assert m.registry.get_sample_value("streamvae_model_behind_plant") == 0.0
    w.observe(batch(2.0, 6), "v1")
    assert m.registry.get_sample_value("streamvae_model_behind_plant") == 1.0
