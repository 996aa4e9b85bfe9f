"""The daemon's hot swap without a broker: a stub stands in for the control listener.

A requested version is loaded in a background thread and the pipeline switches only on a
later ``tick``; a corrupt or incompatible version leaves the old one serving and is
counted. (Over a real broker, with two daemons: tests/integration/test_hot_swap.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from streamvae.config import load_config
from streamvae.core.clock import FakeClock
from streamvae.core.pipeline import StreamPipeline
from streamvae.kafka.control import ControlEvent
from streamvae.model import artifact
from streamvae.model.detector import VAEDetector
from streamvae.registry import Registry
from streamvae.core.compose import build_pipeline
from streamvae.service.hotswap import CONTROL_POLL_S, CURRENT_CHECK_S, HotSwap
from streamvae.service.metrics import Metrics


class StubListener:
    """Events as the control topic's listener hands them over (parsed; other types dropped)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[ControlEvent]:
        out, self.events = self.events, []
        return [ControlEvent.from_dict(e) for e in out if e["type"] in ("promote", "rollback", "rejected")]

    def close(self) -> None:
        pass


@pytest.fixture
def setup(detector: VAEDetector, heldout_windows: np.ndarray,
          tmp_path: Path) -> tuple[Registry, HotSwap, StreamPipeline, StubListener, Metrics]:
    reg = Registry(tmp_path / "registry")
    for v in ("v1", "v2", "v3"):
        reg.add(detector, version=v)
    reg.promote("v1")
    cfg = load_config(None, env={"STREAMVAE_MODEL__PATH": str(reg.root)})
    det = artifact.load(artifact.resolve(reg.root))
    metrics = Metrics()
    swap = HotSwap(cfg, reg, metrics, det, clock=FakeClock(1_700_000_000.0))
    stub = StubListener()
    swap.listener = stub  # type: ignore[assignment]
    swap.note_batch(SimpleNamespace(normal=[SimpleNamespace(values=w) for w in heldout_windows], windows=None), fleet_shift=False)
    return reg, swap, build_pipeline(cfg, det), stub, metrics


def _settle(swap: HotSwap, pipeline: StreamPipeline) -> Any:
    """Ticks until the background load (if any) has been taken in; the last tick's result."""
    assert isinstance(swap.clock, FakeClock)
    swap.clock.advance(CONTROL_POLL_S)  # the loop reads the control topic at most every 0.25 s
    out = swap.tick(pipeline)
    while swap.loading is not None:
        assert swap.loading.thread is not None
        swap.loading.thread.join(30)
        out = swap.tick(pipeline)
    return out


def test_promotion_swaps_between_ticks(setup: Any, heldout_windows: np.ndarray) -> None:
    reg, swap, pipeline, stub, metrics = setup
    old_scorer = pipeline.scorer
    stub.events.append({"type": "promote", "version": "v2", "previous": "v1", "at": 0.0})
    assert swap.tick(pipeline) is None
    assert swap.loading is not None and swap.loading.version == "v2"
    assert pipeline.model_version == "v1" and pipeline.scorer is old_scorer  # still loading: old model serves
    new = _settle(swap, pipeline)
    assert new is not None and new.version_ == "v2"
    assert pipeline.model_version == "v2" and pipeline.scorer is new
    assert metrics.get("model_swaps_total") == 1
    assert metrics.get("model_info", version="v2") == 1 and metrics.get("model_info", version="v1") == 0
    # recalibrated on the new model's scores of the recent normal windows
    assert pipeline.thresholds.get() is not None
    assert pipeline.thresholds.get() > np.quantile(new.score_samples(heldout_windows), 0.9)


def test_broken_or_incompatible_version_leaves_the_old_one_serving(setup: Any) -> None:
    reg, swap, pipeline, stub, metrics = setup
    data = bytearray((reg.path("v2") / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (reg.path("v2") / "weights.npz").write_bytes(bytes(data))
    stub.events.append({"type": "promote", "version": "v2"})
    assert _settle(swap, pipeline) is None
    assert pipeline.model_version == "v1"
    assert metrics.get("model_swap_failures_total", reason="load") == 1
    # CURRENT names the broken version: the periodic re-read does not retry it forever
    (reg.root / "CURRENT").write_text("v2\n")
    swap.clock.advance(CURRENT_CHECK_S)  # type: ignore[attr-defined]
    assert _settle(swap, pipeline) is None and swap.loading is None
    assert metrics.get("model_swap_failures_total", reason="load") == 1

    # v3 with other feature names (checksums fixed up, so it loads): refused
    m = json.loads((reg.path("v3") / "manifest.json").read_text())
    m["feature_names"] = ["x", "y", "z"]
    (reg.path("v3") / "manifest.json").write_text(json.dumps(m))
    sums = "".join(f"{artifact._sha256(reg.path('v3') / n)}  {n}\n" for n in artifact.FILES)
    (reg.path("v3") / artifact.CHECKSUM).write_text(sums)
    stub.events.append({"type": "promote", "version": "v3"})
    assert _settle(swap, pipeline) is None
    assert pipeline.model_version == "v1"
    assert metrics.get("model_swap_failures_total", reason="incompatible") == 1
    assert metrics.get("model_swaps_total") == 0


def test_latest_request_wins(setup: Any) -> None:
    reg, swap, pipeline, stub, metrics = setup
    stub.events += [{"type": "promote", "version": "v2"}, {"type": "promote", "version": "v3"}]
    assert _settle(swap, pipeline).version_ == "v3"
    stub.events += [{"type": "promote", "version": "v2"}]
    swap.clock.advance(CONTROL_POLL_S)  # type: ignore[attr-defined]
    swap.tick(pipeline)  # v2 starts loading ...
    stub.events += [{"type": "rollback", "version": "v3"}, {"type": "retrain_rejected", "reason": "gate"}]
    assert _settle(swap, pipeline) is None  # ... and is discarded: v3 is wanted again
    assert pipeline.model_version == "v3"
    assert metrics.get("model_swaps_total") == 1


def test_the_control_topic_is_read_at_most_every_poll_interval_of_the_clock(setup: Any) -> None:
    reg, swap, pipeline, stub, metrics = setup
    swap.tick(pipeline)  # the first tick reads it
    stub.events.append({"type": "promote", "version": "v2"})
    swap.clock.advance(CONTROL_POLL_S / 2)
    swap.tick(pipeline)
    assert swap.loading is None and stub.events  # not read yet: the clock has not moved far enough
    swap.clock.advance(CONTROL_POLL_S / 2)
    swap.tick(pipeline)
    assert swap.loading is not None and swap.loading.version == "v2"
    assert _settle(swap, pipeline).version_ == "v2"


def test_a_swap_measures_whether_the_new_model_is_behind_the_plant(setup: Any, heldout_windows: np.ndarray) -> None:
    reg, swap, pipeline, stub, metrics = setup
    stub.events.append({"type": "promote", "version": "v2", "previous": "v1", "at": 0.0})
    assert _settle(swap, pipeline) is not None
    assert swap.above_own_ <= 0.01  # the recent windows are the plant it was trained on
    moved = heldout_windows + 1.5 * heldout_windows.std(axis=(0, 1))  # the plant went where it never saw
    swap.note_batch(SimpleNamespace(normal=[SimpleNamespace(values=w) for w in moved], windows=None), fleet_shift=False)
    stub.events.append({"type": "promote", "version": "v3", "previous": "v2", "at": 0.0})
    assert _settle(swap, pipeline) is not None and pipeline.model_version == "v3"
    assert swap.above_own_ > 0.25, swap.above_own_
