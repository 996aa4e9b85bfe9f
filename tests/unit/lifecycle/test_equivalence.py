"""Replay back-tests what the daemon runs: the same feed through ``replay --retrain``'s code
path and through the daemon's retrain worker gives the same buffers, the same trigger
times and the same gate verdicts (issue 15, item 2).

Replay (:func:`streamvae.offline.replay.replay` with a :class:`ReplayRetrainer`) runs the
feed and records every BatchResult with its stream time. The daemon's
:class:`~streamvae.service.retrain.RetrainWorker` is then driven with those results,
its clock a FakeClock at each batch's stream time; its retrain child runs in this
process through the child's own entry point (``streamvae retrain --config F --result
FILE``: the exported buffer, the registry's CURRENT, the verdict file), with the control
event captured instead of published. Two feeds: a fleet-wide shift (retrains promote)
and a poisoned stretch (a threshold no window reaches lets every fault into the buffer;
the gate rejects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamvae.cli import main
from streamvae.config import Config, load_config
from streamvae.core.clock import FakeClock
from streamvae.core.compose import build_pipeline
from streamvae.core.pipeline import BatchResult, StreamPipeline
from streamvae.core.windows import sliding_windows
from streamvae.lifecycle.loop import TrainingSet
from streamvae.lifecycle.recalibrate import RecalibrationWindows
from streamvae.model.detector import VAEDetector
from streamvae.model.vae import VAEConfig
from streamvae.offline.csvio import Table
from streamvae.offline.feed import FEATURES, SensorFeed
from streamvae.offline.replay import ReplayRetrainer, replay
from streamvae.registry import Registry
from streamvae.service.metrics import Metrics
from streamvae.service.retrain import RetrainWorker, training_set

W, F = 8, len(FEATURES)
RETRAIN = ("min_windows = 200\nmax_windows = 5000\nsample_every = 2\nmargin = 30.0\nmin_interval = 300.0\n"
           "epochs = 4\ndrift = \"adwin\"\nmax_anomalies = 500\nafter_windows = 800\n")


@pytest.fixture(scope="module")
def plant_model() -> VAEDetector:
    """A tiny VAE trained on the plant's usual operating point."""
    ts, x = SensorFeed(4, 4.0, 1500, None, seed=1, plant=0).arrays()
    windows = np.concatenate([sliding_windows(x[e], W, 1, ts[e]).values for e in range(4)])
    cfg = VAEConfig(window=W, n_features=F, encoder=(16, 8), latent=3, epochs=25, patience=5, seed=3, interval=1.0)
    det = VAEDetector(cfg, list(FEATURES)).fit(windows)
    det.version_ = "v0"
    return det


def table_of(feed: SensorFeed) -> Table:
    recs = list(feed.records())
    values = np.array([[np.nan if v is None else v for v in r["values"].values()] for r in recs])
    ts = np.array([r["ts"] for r in recs])
    return Table(Path("feed.csv"), ts, [repr(t) for t in ts], list(FEATURES), values, {"entity": [r["entity"] for r in recs]})


class Recorder(ReplayRetrainer):
    """Replay's retrainer, recording what the worker must see and do the same."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batches: list[tuple[BatchResult, float, str, str]] = []
        self.sets: list[TrainingSet] = []
        self.recal: list[np.ndarray | None] = []
        self.pipes: list[StreamPipeline] = []

    def after_batch(self, pipe: StreamPipeline, res: BatchResult, now: float) -> None:
        before = pipe.model_version
        self.pipes[:1] = [pipe]
        super().after_batch(pipe, res, now)
        self.batches.append((res, now, before, pipe.model_version))

    def run(self, pipe: StreamPipeline, reason: str, now: float) -> Any:
        self.sets.append(self.lifecycle.training_set())
        self.recal.append(self.lifecycle.recalibration_windows())
        return super().run(pipe, reason, now)


class InProcessWorker(RetrainWorker):
    """The daemon's worker whose child runs here, through the child's own entry point."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started: list[tuple[float, str]] = []
        self.verdicts: list[dict[str, Any]] = []
        self.sets: list[TrainingSet] = []

    def _spawn(self, cmd: list[str], env: dict[str, str], out: Any) -> Any:
        args = cmd[cmd.index("retrain"):]
        self.started.append((self.clock.time(), args[args.index("--reason") + 1]))
        self.sets.append(training_set(self.cfg, W, F))  # what the child reads back
        code = main(args)
        self.verdicts.append(json.loads(Path(args[args.index("--result") + 1]).read_text()))
        return _Done(code)


@dataclass
class _Done:
    returncode: int
    pid: int = 0

    def poll(self) -> int:
        return self.returncode


def _drive(tmp_path: Path, det: VAEDetector, feed: SensorFeed, extra: str,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, InProcessWorker, list[bool], Config]:
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.add(det, "v0"))
    state = tmp_path / "state"
    path = tmp_path / "streamvae.toml"
    path.write_text(f'[model]\npath = "{reg.root}"\n[episodes]\nopen_after = 4\nclose_after = 30\n{extra}'
                    f'[retrain]\nenabled = true\nstate_dir = "{state}"\n{RETRAIN}')
    cfg = load_config(path)
    # 1 replay --retrain
    rec = Recorder(cfg.retrain, W, F)
    replay(table_of(feed), det, 0, "entity", cfg, det.heldout_scores_, batch=400, retrainer=rec)
    # 2 the daemon's worker, fed the same batches at their stream time
    import streamvae.kafka.control as control

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(control, "publish_control", lambda k, topic, ev, timeout_s=30.0: sent.append(dict(ev)))
    clock = FakeClock(rec.batches[0][1])
    worker = InProcessWorker(cfg, str(path), W, F, Metrics(), clock=clock)
    recal = RecalibrationWindows()  # what the daemon's hot swap keeps (HotSwap.note_batch)
    same_recal = []
    for res, now, before, after in rec.batches:
        clock.advance(now - clock.time())
        worker.observe(res, before)
        recal.observe(res, worker.fleet_shift_on)
        n = len(worker.started)
        worker.tick()
        if len(worker.started) > n:
            want = rec.recal[n]
            got = recal.windows()
            same_recal.append(want is not None and got is not None and np.array_equal(want, got, equal_nan=True))
        if after != before:  # replay swapped: the daemon's hot swap would now, on the same recent windows
            ev = next(e for e in rec.events if e.version == after)
            worker.model_swapped(ev.above_own, ev.own_threshold)
    assert [e["type"] for e in sent] == [v["result"].replace("promoted", "promote") for v in worker.verdicts]
    return rec, worker, same_recal, cfg


def _assert_same(rec: Recorder, worker: InProcessWorker, same_recal: list[bool]) -> None:
    # trigger times and reasons
    assert worker.started == [(e.at, e.reason) for e in rec.events]
    # the training sets the two candidates learned from (the worker's: read back from its export)
    for a, b in zip(rec.sets, worker.sets, strict=True):
        np.testing.assert_array_equal(a.normals, b.normals)
        assert a.entities == b.entities
        np.testing.assert_array_equal(a.anomalies, b.anomalies)
    # gate verdicts
    assert [v["result"] == "promoted" for v in worker.verdicts] == [e.passed for e in rec.events]
    assert [v["gate"]["reasons"] for v in worker.verdicts] == [e.reasons for e in rec.events]
    # buffer contents at the end, and the recalibration windows at each retrain
    for a, b in zip(rec.lifecycle.buffer.snapshot(), worker.lifecycle.buffer.snapshot(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(rec.lifecycle.bank.snapshot(), worker.lifecycle.bank.snapshot(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert rec.lifecycle.buffer.counts_ == worker.lifecycle.buffer.counts_
    assert all(same_recal) and len(same_recal) == len(rec.events)


def _shape(p: StreamPipeline) -> tuple[Any, ...]:
    a, r = p.assembler, p.rules
    return (a.size, a.stride, a.max_gap, None if r is None else (r.dead, r.stuck), p.thresholds.kind, p.fleet_share,
            p.episodes.open_after, p.episodes.close_after)


def test_fleet_wide_shift_same_buffers_triggers_and_verdicts(plant_model: VAEDetector, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    feed = SensorFeed(4, 4.0, 1800, None, seed=2, plant=0, shift=0.4, shift_at=300, shift_over=600)
    rec, worker, same_recal, cfg = _drive(tmp_path, plant_model, feed, "", monkeypatch)
    assert len(rec.events) >= 2 and any(e.passed for e in rec.events), [e.summary() for e in rec.events]
    assert any(e.reason.startswith("new operating point") for e in rec.events)
    assert rec.lifecycle.buffer.fleet_.starts_  # the shift was seen as one
    _assert_same(rec, worker, same_recal)
    # replay ran the daemon's pipeline, built from the same config
    assert _shape(rec.pipes[0]) == _shape(build_pipeline(cfg, plant_model))


def test_poisoned_stretch_same_rejections(plant_model: VAEDetector, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    faults = "spike:4,level_shift:4,drift:4,noise_burst:4,broken_correlation:4,duration=150,warmup=0,gap=20"
    feed = SensorFeed(4, 4.0, 1500, faults, seed=5, plant=0)
    rec, worker, same_recal, _ = _drive(tmp_path, plant_model, feed, '[threshold]\nkind = "fixed"\nvalue = 1e9\n',
                                        monkeypatch)
    contaminated = [e for e in rec.events if any("contaminated" in r for r in e.reasons)]
    assert len(contaminated) >= 2 and not any(e.passed for e in contaminated), [e.summary() for e in rec.events]
    _assert_same(rec, worker, same_recal)
