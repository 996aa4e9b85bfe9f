"""The streaming pipeline with the real tiny VAE: windows -> one model call -> thresholds
-> episodes, batch by batch.

Four pumps send one reading per second (three correlated sinusoids, as the detector was
trained on); pump-2's pressure shifts up by 3 units (about 4 of its amplitudes) for 30
readings. Readings of all pumps are interleaved in arrival order and cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np
import numpy.typing as npt
import pytest

from streamvae.core.episodes import Alert, EpisodeTracker, Naming
from streamvae.core.parts import FIRST_PART, LAST_PART, MAX_PART, rest_parts
from streamvae.core.pipeline import BatchResult, Reading, StreamPipeline
from streamvae.core.bank import ThresholdBank
from streamvae.core.spot import SPOT
from helpers import FEATURE_NAMES, HeldUntilIdle, make_series
from streamvae.core.windows import WindowAssembler, sliding_windows

ENTITIES = ["pump-1", "pump-2", "pump-3", "pump-4"]
ANOMALOUS, FEATURE, SHIFT = "pump-2", FEATURE_NAMES.index("pressure"), 3.0
N = 400  # readings per pump
FAULT = range(200, 230)  # reading indices (= seconds) of pump-2's level shift


def readings(n: int = N, t0: float = 0.0, fault: bool = True) -> list[Reading]:
    series = {e: make_series(n, seed=100 + k).astype(np.float32) for k, e in enumerate(ENTITIES)}
    if fault:
        series[ANOMALOUS][FAULT.start : FAULT.stop, FEATURE] += SHIFT
    return [Reading(e, t0 + i, series[e][i]) for i in range(n) for e in ENTITIES]


def normal_scores(detector: Any, heldout_windows: np.ndarray) -> np.ndarray:
    return np.concatenate([detector.heldout_scores_, detector.score(heldout_windows).score])


def make_pipeline(detector: Any, warm: np.ndarray, max_lateness: float = 0.0) -> StreamPipeline:
    cfg = detector.config
    return StreamPipeline(
        detector,
        ThresholdBank("spot", {"q": 1e-3}).warm_start(warm),
        EpisodeTracker(open_after=3, close_after=20, update_every=60),
        WindowAssembler(size=cfg.window, stride=1, n_features=cfg.n_features, max_lateness=max_lateness),
        model_version="test",
    )


def run(pipe: StreamPipeline, rs: list[Reading], batch: int | list[int]) -> list[BatchResult]:
    """Process ``rs`` in batches of ``batch`` readings (a list of sizes is cycled)."""
    sizes = batch if isinstance(batch, list) else [batch]
    out, i, k = [], 0, 0
    while i < len(rs):
        size = sizes[k % len(sizes)]
        out.append(pipe.process(rs[i : i + size]))
        i, k = i + size, k + 1
    return out


@pytest.fixture(scope="module")
def warm(detector: Any, heldout_windows: np.ndarray) -> np.ndarray:
    return normal_scores(detector, heldout_windows)


@pytest.fixture(scope="module")
def results(detector: Any, warm: np.ndarray) -> list[BatchResult]:
    return run(make_pipeline(detector, warm), readings(), 50)


def test_the_injected_fault_opens_an_alert_naming_the_feature(results: list[BatchResult]) -> None:
    alerts = [a for r in results for a in r.alerts]
    mine = [a for a in alerts if a.entity == ANOMALOUS]
    assert [a.kind for a in mine][0] == "open"
    opened = mine[0]
    assert opened.features[0][0] == "pressure", opened.features
    assert opened.features[0][1] > 0.5  # most of the window's NLL
    assert FAULT.start <= opened.window_end <= FAULT.stop + 15  # a window that saw the shift
    assert opened.score > opened.threshold  # type: ignore[operator]
    assert opened.model_version == "test" and opened.detected_at == opened.window_end
    assert [a.kind for a in mine] == ["open", "close"]  # one episode, closed after 20 quiet s
    assert mine[1].window_end >= (FAULT.stop - 1 + 15) + 20  # last window with the shift ends at 244
    flagged = [s for r in results for s in r.scored if s.flagged]
    assert sum(s.entity == ANOMALOUS and FAULT.start <= s.end_ts < FAULT.stop + 15 for s in flagged) >= 40
    # normal pumps: ~1,150 normal windows at q=1e-3, three in a row to open: no alert
    assert [a for a in alerts if a.entity != ANOMALOUS] == []
    assert sum(s.entity != ANOMALOUS for s in flagged) <= 5


def test_scored_windows_per_batch_are_what_the_assembler_completes(detector: Any, results: list[BatchResult]) -> None:
    cfg = detector.config
    twin = WindowAssembler(size=cfg.window, stride=1, n_features=cfg.n_features)
    rs = readings()
    for k, r in enumerate(results):
        done = [w for x in rs[50 * k : 50 * (k + 1)] for w in twin.push(x.entity, x.ts, x.values)]
        assert [(s.entity, s.end_ts, s.end_index) for s in r.scored] == [(w.entity, w.end_ts, w.end_index) for w in done]
        assert r.rejected == []
    assert sum(len(r.scored) for r in results) == len(ENTITIES) * (N - cfg.window + 1)
    # the pipeline's scores are the detector's own scores of the same windows
    s1 = [s for r in results for s in r.scored if s.entity == "pump-1"]
    ref = detector.score(sliding_windows(make_series(N, seed=100).astype(np.float32), cfg.window, 1).values)
    np.testing.assert_allclose([s.score for s in s1], ref.score, rtol=1e-6)


def test_flagged_windows_an_alert_may_name_carry_the_detectors_shares(detector: Any, results: list[BatchResult]) -> None:
    # Every window is scored without detail; the flagged ones an alert may name (the one
    # that opens an episode, every flagged one while it is open) get their shares from a
    # second call, a flag that opens nothing gets none.
    named = []
    for r in results:
        if not r.scored:  # the first batches fill the windows
            continue
        assert r.windows is not None and len(r.windows) == len(r.scored)
        assert all(s.shares is None for s in r.scored if not s.flagged)
        got = [j for j, s in enumerate(r.scored) if s.shares is not None]
        if got:
            ref = detector.score(r.windows[got]).shares
            np.testing.assert_allclose(np.stack([cast(np.ndarray, r.scored[j].shares) for j in got]), ref, rtol=1e-4, atol=1e-6)
            named += [r.scored[j] for j in got]
    opened, closed = [a for r in results for a in r.alerts if a.entity == ANOMALOUS]
    episode = [s for r in results for s in r.scored if s.entity == ANOMALOUS and s.flagged
               and opened.window_end <= s.end_ts <= closed.window_end]
    assert len(episode) >= 38 and all(s.shares is not None for s in episode)  # the fault of `results`
    assert {(s.entity, s.end_ts) for s in named} == {(s.entity, s.end_ts) for s in episode}
    # the few flags on the normal pumps (no alert) and pump-2's two before its episode opened
    skipped = [s for r in results for s in r.scored if s.flagged and s.shares is None]
    assert sum(s.entity == ANOMALOUS for s in skipped) == 2 and len(skipped) <= 7


@pytest.mark.parametrize("open_after, close_after, update_every", [(2, 3, 5), (1, 2, 3), (2, 1, 2), (2, 6, 1)])
def test_alerts_are_the_same_as_with_every_flags_features(detector: Any, warm: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                                                          open_after: int, close_after: int, update_every: int) -> None:
    # A loose threshold (q = 5%) flags many windows, in runs short and long: episodes open,
    # get updates and close all the time. Naming only the windows that may be named
    # changes no alert, features and their shares included.
    model = FixedShape(detector)  # one score per window whatever the batch around it

    def alerts() -> tuple[list[dict[str, Any]], int]:
        pipe = StreamPipeline(model, ThresholdBank("spot", {"q": 0.05}).warm_start(warm),
                              EpisodeTracker(open_after=open_after, close_after=close_after, update_every=update_every),
                              WindowAssembler(size=detector.config.window, stride=1, n_features=detector.config.n_features),
                              model_version="test")
        res = run(pipe, readings(), [50, 7, 333])
        pipe.close()
        return [a.to_dict() for r in res for a in r.alerts], sum(s.shares is not None for r in res for s in r.scored)

    # every flagged window that opens an episode or comes while one is open reaches the
    # tracker with its features (the windows whose features an alert may name)
    unnamed: list[tuple[str, float]] = []
    observe = EpisodeTracker.observe

    def spy(self: EpisodeTracker, entity: str, start: float, end: float, score: float, thr: float | None,
            flagged: bool, features: Sequence[tuple[str, float]], *a: Any, **k: Any) -> list[Alert]:
        out = observe(self, entity, start, end, score, thr, flagged, features, *a, **k)
        if flagged and self.is_open(entity) and not features:
            unnamed.append((entity, end))
        return out

    with monkeypatch.context() as m:
        m.setattr(EpisodeTracker, "observe", spy)
        named, n_named = alerts()
    assert unnamed == []
    with monkeypatch.context() as m:
        m.setattr(Naming, "named", lambda self, entity, flagged: flagged)
        every, n_every = alerts()
    kinds = [a["kind"] for a in every]
    assert kinds.count("open") >= 5 and kinds.count("close") >= 5 and "update" in kinds
    assert named == every
    if open_after > 1:
        assert n_every - n_named >= 10  # and it skipped some (57 of 71 named at (2, 3, 5) when written)
    else:
        assert n_named == n_every  # every flag opens an episode or is in one


def test_normal_windows_are_handed_on_unless_flagged_or_in_an_episode(results: list[BatchResult]) -> None:
    for r in results:
        ok = {(s.entity, s.end_index) for s in r.scored if not s.flagged}
        assert {(w.entity, w.end_index) for w in r.normal} <= ok
    normal = [w for r in results for w in r.normal]
    assert not any(w.entity == ANOMALOUS and FAULT.start <= w.end_ts < FAULT.stop + 15 for w in normal)
    assert len(normal) > 0.9 * len(ENTITIES) * (N - 15)


def test_a_clock_step_back_restarts_the_entity_and_the_rest_is_scored(detector: Any, warm: np.ndarray) -> None:
    pipe = make_pipeline(detector, warm, max_lateness=5.0)
    run(pipe, readings(100, fault=False), 400)
    x = np.zeros(3, np.float32) + 0.1
    late = [Reading("pump-1", 100.0, x), Reading("pump-2", 100.0, x), Reading("pump-1", 93.0, x),
            Reading("pump-3", 100.0, x), Reading("pump-1", 94.0, x)]  # 7 s back: a new sequence for pump-1
    r = pipe.process(late)
    assert r.rejected == [] and pipe.assembler.clock_resets_ == 1
    # pump-1 has no full window after its reset; the others go on
    assert [(s.entity, s.end_ts) for s in r.scored] == [("pump-1", 100.0), ("pump-2", 100.0), ("pump-3", 100.0)]


@dataclass
class Scored:
    entity: str
    end_ts: float
    flagged: bool
    score: float
    threshold: float | None


def _flatten(results: list[BatchResult]) -> tuple[list[Scored], list[dict[str, Any]]]:
    scored = [Scored(s.entity, s.end_ts, s.flagged, s.score, s.threshold) for r in results for s in r.scored]
    alerts = [a.to_dict() for r in results for a in r.alerts]
    return scored, alerts


def thresholds(scored: Sequence[Scored]) -> list[float]:
    """Each window's threshold; every one of these windows has one."""
    out = [s.threshold for s in scored]
    assert None not in out
    return cast(list[float], out)


@dataclass
class Out:
    """A :class:`~streamvae.core.scoring.ScoreBatch`."""

    score: npt.NDArray[np.float64]
    shares: npt.NDArray[np.float32] | None


class FixedShape:
    """The real detector, with one score per window whatever the batch around it.

    The compiled model's kernels depend on the batch: one window's score differs in the
    last float32 bits between a batch of 7 and one of 700 (~4e-6 of ~30 measured), and,
    with the TensorFlow/Keras versions installed on 2026-12-04, between two rows of one
    zero-padded block of 256 as well. So each window is scored once (in blocks of 256,
    zero-padded) and its score and shares are remembered: a window's score then depends on
    the window alone, and any difference between batch splits below is the pipeline's own."""

    version_: str | None = "fixed-shape"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.names = list(inner.names)
        self.lean_calls = 0
        self._score: dict[bytes, float] = {}
        self._shares: dict[bytes, np.ndarray] = {}

    def _fill(self, x: np.ndarray, detail: bool) -> None:
        memo = self._shares if detail else self._score
        todo = list({w.tobytes(): w for w in x if w.tobytes() not in memo}.items())
        for i in range(0, len(todo), 256):
            keys = [k for k, _ in todo[i : i + 256]]
            block = np.stack([w for _, w in todo[i : i + 256]])
            padded = np.concatenate([block, np.zeros((256 - len(block), *x.shape[1:]), np.float32)])
            out = self.inner.score(padded, detail)
            for j, k in enumerate(keys):
                self._score.setdefault(k, float(out.score[j]))
                if detail:
                    self._shares[k] = out.shares[j]

    def score(self, X: npt.ArrayLike, detail: bool = True) -> Out:
        x = np.asarray(X, np.float32)
        self.lean_calls += not detail
        self._fill(x, detail)
        keys = [w.tobytes() for w in x]
        scores = np.array([self._score[k] for k in keys])
        return Out(scores, np.stack([self._shares[k] for k in keys]) if detail else None)


def test_idle_runs_once_while_the_model_scores_a_big_batch_and_changes_nothing(detector: Any, warm: np.ndarray) -> None:
    """The daemon reads its next poll there (streamvae/kafka/readahead.py)."""
    rs = readings()
    held = HeldUntilIdle(detector)
    pipe = make_pipeline(detector, warm)
    pipe.scorer = held
    calls: list[int] = []

    def idle(rejected: list[Any]) -> None:
        assert rejected == []
        calls.append(len(calls))
        held.idle.set()

    got = pipe.process(iter(rs), size=len(rs), idle=idle)
    pipe.close()
    assert calls == [0]
    plain = make_pipeline(detector, warm)
    assert _flatten([got]) == _flatten(run(plain, rs, len(rs)))
    plain.close()
    small = make_pipeline(detector, warm)  # below ``overlap``: scored on the main thread, nothing to wait for
    small.process(rs[: small.overlap - 1], idle=lambda rejected: calls.append(-1))
    assert calls == [0] and small._worker is None


def test_batch_splits_give_identical_results(detector: Any, warm: np.ndarray) -> None:
    rs = readings()
    model = FixedShape(detector)

    def pipeline() -> StreamPipeline:
        pipe = make_pipeline(detector, warm)
        pipe.scorer = model
        return pipe

    big = pipeline()
    whole = _flatten(run(big, rs, len(rs)))
    # one batch, scored in parts on the worker, none over MAX_PART windows: 32, 64, 128, ...
    # while assembling (one window per reading here), then the rest in parts of MAX_PART
    # and a last one of at most LAST_PART
    assert len(rs) >= big.overlap and big._worker is not None
    sent, cut, calls = 0, FIRST_PART, 0
    while sent + cut <= len(whole[0]):
        sent, cut, calls = sent + cut, min(2 * cut, MAX_PART), calls + 1
    rest = rest_parts(sent, len(whole[0]))
    assert model.lean_calls == calls + len(rest) > 3
    assert max(hi - lo for lo, hi in rest) <= MAX_PART and rest[-1][1] - rest[-1][0] <= LAST_PART
    big.close()
    assert sum(a["kind"] == "open" for a in whole[1]) == 1
    lazy = pipeline()  # readings from an iterator, as the daemon decodes them
    assert _flatten([lazy.process(iter(rs), size=len(rs))]) == whole
    assert lazy._worker is not None
    lazy.close()
    for sizes in (50, 7, [3, 50, 11, 200, 1, 1, 333, 64]):
        assert _flatten(run(pipeline(), rs, sizes)) == whole, sizes


def test_the_bare_detector_gives_the_same_decisions_in_any_batch_split(detector: Any, warm: np.ndarray) -> None:
    # Without FixedShape: scores agree to float32 rounding, every decision and alert exactly.
    # (Few splits: the compiled model builds a new XLA program for each new batch size,
    # ~1.5 s each on the 2-core test machine.)
    rs = readings()
    whole_s, whole_a = _flatten(run(make_pipeline(detector, warm), rs, len(rs)))
    for sizes in (50, 7):
        got_s, got_a = _flatten(run(make_pipeline(detector, warm), rs, sizes))
        assert [(s.entity, s.end_ts, s.flagged) for s in got_s] == [(s.entity, s.end_ts, s.flagged) for s in whole_s]
        np.testing.assert_allclose([s.score for s in got_s], [s.score for s in whole_s], rtol=1e-6)
        np.testing.assert_allclose(thresholds(got_s), thresholds(whole_s), rtol=1e-6)
        keys = ("alert_id", "kind", "entity", "window_start", "window_end", "episode_id", "detected_at")
        assert [{k: a[k] for k in keys} for a in got_a] == [{k: a[k] for k in keys} for a in whole_a]
        assert [[f["name"] for f in a["features"]] for a in got_a] == [[f["name"] for f in a["features"]] for a in whole_a]


class Rescaled:
    """Another model for the swap: the detector's scores on another scale (x10 + 50), as
    a retrained model's would be. Same features, same shares."""

    version_: str | None = "rescaled"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.names = list(inner.names)

    def score(self, X: npt.ArrayLike, detail: bool = True) -> Out:
        out = self.inner.score(X, detail)
        return Out(out.score * 10.0 + 50.0, out.shares)


def test_swap_model_recalibrates_thresholds(detector: Any, warm: np.ndarray) -> None:
    pipe = make_pipeline(detector, warm)
    run(pipe, readings(100, fault=False), 400)
    for e in ENTITIES:  # entities with trackers of their own are forgotten on a swap
        for s in warm.tolist():
            pipe.thresholds.update(e, s)
    assert pipe.thresholds.has_own("pump-1")
    new = Rescaled(detector)
    new_warm = warm * 10.0 + 50.0
    pipe.swap_model(new, "v2", new_warm)
    assert pipe.thresholds.get() == SPOT(q=1e-3).warm_start(new_warm).get()
    assert not pipe.thresholds.has_own("pump-1") and len(pipe.thresholds) == 0
    rs = readings(300, t0=100.0)  # pump-2's fault at 300..329 s
    results = run(pipe, rs, 400)
    assert len(results[0].scored) == 400  # windows in progress were kept: no refill
    alerts = [a for r in results for a in r.alerts]
    assert {a.entity for a in alerts} == {ANOMALOUS}
    assert alerts[0].kind == "open" and alerts[0].model_version == "v2"
    assert alerts[0].features[0][0] == "pressure"
    # with the old thresholds every window of the new model would have been flagged
    assert min(s.score for r in results for s in r.scored) > warm.max()
    with pytest.raises(ValueError, match="features"):
        pipe.swap_model(type("Other", (), {"names": ["a", "b", "c"]})(), "v3", new_warm)
