"""``streamvae evaluate nab``: the detector on the Numenta Anomaly Benchmark, as a user runs it.

Every file is run on its own, causally, exactly as ``streamvae replay --train-first``
runs a recording: the initial model is trained on the file's probationary rows only
(the first ``min(floor(0.15 n), 750)``), the thresholds are warm-started from its scores,
and the rest of the file is fed through the daemon's pipeline
(:func:`streamvae.core.compose.build_pipeline`, the daemon's configuration) in
poll-sized batches. No label is used by the detector.

Two readings of the same run are scored with NAB's rules (:mod:`streamvae.offline.nabscore`):

- **alerts** (the headline): a row where an alert episode opened is a detection, every
  other row is not. This is what a subscriber to the alerts topic sees. It is binary, so
  NAB's threshold search has nothing to choose: the figure is the score of the alerts
  as they are.
- **continuous**: each row's score relative to its threshold,
  ``u = (score - m) / (threshold - m)`` with ``m`` the median of the warm-start scores
  (``u = 1`` at the threshold), mapped monotonically to [0, 1]; NAB's threshold search
  then picks the best cut for all files at once (tuned on the files it is measured on,
  as NAB does for every detector).

Also reported: windows caught (by an alert opening inside them), false episodes (alert
openings outside every window, probation excluded), and the share of scored windows
flagged outside the labelled windows, per file (the median is the figure).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamvae.config import Config
from streamvae.errors import DataError
from streamvae.offline.csvio import parse_ts, read_table
from streamvae.offline.nabscore import PROFILES, Profile, ScoredFile, normalise, probation_rows, sweep

log = logging.getLogger(__name__)

DEFAULT_DATA = Path("..") / "shared" / "data" / "nab-dev"
HEADLINE = (("standard", "standard"), ("low_fp", "reward_low_FP_rate"), ("low_fn", "reward_low_FN_rate"))


def data_dir(option: str | None = None) -> Path:
    """--data, else $STREAMVAE_NAB_DATA, else ../shared/data/nab-dev."""
    p = Path(option or os.environ.get("STREAMVAE_NAB_DATA") or DEFAULT_DATA)
    if not (p / "labels" / "combined_windows.json").is_file() or not (p / "data").is_dir():
        raise DataError(f"no NAB data at {p} (expected data/ and labels/combined_windows.json); "
                        "pass --data DIR or set STREAMVAE_NAB_DATA")
    return p


def profiles(root: Path) -> dict[str, Profile]:
    """NAB's cost matrices from ``config/profiles.json`` (the built-in copy when absent)."""
    f = root / "config" / "profiles.json"
    if not f.is_file():
        return dict(PROFILES)
    try:
        raw = json.loads(f.read_text())
        return {name: Profile(name, float(p["CostMatrix"]["tpWeight"]), float(p["CostMatrix"]["fpWeight"]),
                              float(p["CostMatrix"]["fnWeight"])) for name, p in raw.items()}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"cannot read NAB profiles from {f}: {e}") from None


@dataclass(frozen=True)
class NabFile:
    name: str  # category/file.csv
    path: Path
    limits: tuple[tuple[float, float], ...]  # window start and end timestamps (epoch seconds)

    @property
    def category(self) -> str:
        return self.name.split("/")[0]


def corpus(root: Path) -> list[NabFile]:
    """Every labelled file, in name order."""
    try:
        windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {root}/labels/combined_windows.json: {e}") from None
    files = []
    for name in sorted(windows):
        path = root / "data" / name
        if not path.is_file():
            raise DataError(f"{path} is labelled in combined_windows.json but missing")
        files.append(NabFile(name, path, tuple((parse_ts(a), parse_ts(b)) for a, b in windows[name])))
    if not files:
        raise DataError(f"no labelled files in {root}/labels/combined_windows.json")
    return files


@dataclass
class FileRun:
    """One file through the detector: per row (every row of the file)."""

    name: str
    ts: np.ndarray
    values: np.ndarray
    score: np.ndarray  # NaN where no window ended (probation, warm-up, refused)
    threshold: np.ndarray
    flag: np.ndarray  # the window ending at the row was flagged
    opened: np.ndarray  # an alert episode opened at the row
    continuous: np.ndarray  # [0, 1], monotone in (score - m) / (threshold - m)
    train_rows: int
    seconds: float
    refused: Counter[str] = field(default_factory=Counter)
    clock_resets: int = 0
    repeated_ts: int = 0
    accepted: int = 0


def continuous_score(score: np.ndarray, threshold: np.ndarray, centre: float) -> np.ndarray:
    """``u = (score - centre) / (threshold - centre)`` mapped to [0, 1] by
    ``0.5 + 0.5 u / (1 + |u|)`` (0.75 at the threshold); 0 where there is no score.

    >>> continuous_score(np.array([1.0, 3.0, np.nan]), np.array([3.0, 3.0, 3.0]), 1.0).tolist()
    [0.5, 0.75, 0.0]
    """
    span = np.maximum(threshold - centre, 1e-12)
    u = (score - centre) / span
    out = 0.5 + 0.5 * u / (1.0 + np.abs(u))
    return np.where(np.isfinite(out), out, 0.0)


def run_file(f: NabFile, cfg: Config, vae: Any, batch: int = 500) -> FileRun:
    """Train on the probationary rows, replay the rest through the daemon's pipeline."""
    from dataclasses import replace as dc_replace

    from streamvae.offline.replay import replay, train_on, warm_scores

    t0 = time.perf_counter()
    table = read_table(f.path)
    n = len(table.values)
    k = probation_rows(n)
    det, train_scores = train_on(table, None, k, dc_replace(vae, n_features=len(table.feature_names)))
    warm = warm_scores(det, train_scores)
    r = replay(table, det, k, None, cfg, warm, batch=batch)
    opened = np.array(["open" in a for a in r.alert], dtype=bool)
    cont = continuous_score(r.score, r.threshold, float(np.median(warm)))
    return FileRun(f.name, table.ts, table.values[:, 0], r.score, r.threshold, r.flag.astype(bool), opened, cont, k,
                   time.perf_counter() - t0, r.refused, r.clock_resets, r.repeated_ts, r.accepted)


def _run_in_worker(args: tuple[NabFile, Config, Any, int]) -> FileRun:
    from streamvae.model import configure_threads

    configure_threads(1)
    return run_file(*args)


def run_all(files: Sequence[NabFile], cfg: Config, vae: Any, jobs: int = 1,
            progress: Callable[[FileRun], None] | None = None) -> list[FileRun]:
    """Every file, in ``jobs`` processes (results in file order; the same with any ``jobs``)."""
    work = [(f, cfg, vae, 500) for f in files]
    out: dict[str, FileRun] = {}
    if jobs <= 1:
        for w in work:
            r = run_file(*w)
            out[r.name] = r
            if progress:
                progress(r)
    else:
        # spawn, not fork: the parent may hold TensorFlow's threads already
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for r in pool.map(_run_in_worker, work):
                out[r.name] = r
                if progress:
                    progress(r)
    return [out[f.name] for f in files]


@dataclass
class FileScore:
    name: str
    category: str
    windows: int
    caught: int
    false_episodes: int
    flagged_share_outside: float  # of scored windows outside the labelled windows
    raw: dict[str, float]  # profile -> S of the alerts


def score_runs(files: Sequence[NabFile], runs: Sequence[FileRun], profs: dict[str, Profile]) -> dict[str, Any]:
    """Every figure of the report, as a JSON-able dict (see the module doc)."""
    scored = [ScoredFile.build(f.name, r.ts, f.limits) for f, r in zip(files, runs)]
    per_file: list[FileScore] = []
    for f, sf, r in zip(files, scored, runs):
        out = sf.scorable & (sf.window < 0) & np.isfinite(r.score)
        share = float(r.flag[out].mean()) if out.any() else 0.0
        fe = int((r.opened & sf.scorable & (sf.window < 0)).sum())
        per_file.append(FileScore(f.name, f.category, sf.n_windows, sf.caught(r.opened), fe, share,
                                  {p: sf.raw(r.opened, prof) for p, prof in profs.items()}))
    n_windows = sum(s.n_windows for s in scored)

    def headline(rows: Sequence[FileScore], nw: int) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key, prof in HEADLINE:
            raw = sum(s.raw[prof] for s in rows)
            d[key] = round(normalise(raw, nw, profs[prof]), 2) if nw else None
            d[f"raw_{key}"] = round(raw, 4)
        d.update(windows_caught=sum(s.caught for s in rows), windows=nw,
                 false_episodes=sum(s.false_episodes for s in rows),
                 flagged_share_outside_median=round(float(np.median([s.flagged_share_outside for s in rows])), 4))
        return d

    top = headline(per_file, n_windows)
    cont: dict[str, Any] = {}
    for key, prof in HEADLINE:
        sw = sweep(scored, [r.continuous for r in runs], profs[prof])
        cont[key] = round(sw.normalised, 2)
        cont[f"threshold_{key}"] = sw.threshold
    top["continuous"] = cont
    cats = sorted({s.category for s in per_file})
    top["by_category"] = {c: headline([s for s in per_file if s.category == c],
                                      sum(s.windows for s in per_file if s.category == c)) for c in cats}
    top["files"] = [{"name": s.name, "windows": s.windows, "caught": s.caught, "false_episodes": s.false_episodes,
                     "flagged_share_outside": round(s.flagged_share_outside, 4),
                     "raw_standard": round(s.raw["standard"], 4)} for s in per_file]
    top["refused"] = dict(sum((r.refused for r in runs), Counter()))
    top["clock_resets"] = sum(r.clock_resets for r in runs)
    top["repeated_ts"] = sum(r.repeated_ts for r in runs)
    top["accepted"] = sum(r.accepted for r in runs)
    return top


def plot_run(out: Path, f: NabFile, r: FileRun) -> Path:
    """value, score and threshold, labelled windows (grey), alert openings (red lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sf = ScoredFile.build(f.name, r.ts, f.limits)
    n = len(r.ts)
    t = np.arange(n)
    fig, axes = plt.subplots(2, 1, figsize=(14, 5), sharex=True)
    for ax in axes:
        for lo, hi in sf.bounds:
            ax.axvspan(lo, hi, color="0.85", lw=0)
        ax.axvline(r.train_rows, color="tab:green", lw=0.8)
        for i in np.nonzero(r.opened)[0]:
            ax.axvline(i, color="tab:red", lw=0.8)
    axes[0].plot(t, r.values, lw=0.6, color="tab:blue")
    axes[0].set_ylabel("value", fontsize=8)
    axes[1].plot(t, r.score, lw=0.6, color="k", label="score: -log p(x)")
    axes[1].plot(t, np.where(r.flag, r.score, np.nan), lw=1.0, color="tab:orange", label="flagged")
    axes[1].plot(t, r.threshold, lw=0.8, color="tab:red", ls="--", label="threshold")
    finite = r.score[np.isfinite(r.score)]
    if len(finite) and finite.min() > 0:
        axes[1].set_yscale("log")
    axes[1].legend(fontsize=7, loc="upper left")
    axes[1].set_xlabel("row (green: end of training; grey: labelled windows; red: alert opened)", fontsize=8)
    caught = sf.caught(r.opened)
    fe = int((r.opened & sf.scorable & (sf.window < 0)).sum())
    fig.suptitle(f"{f.name}: {caught}/{sf.n_windows} windows caught, {fe} false episodes", fontsize=9)
    fig.tight_layout()
    dest = out / (f.name.replace("/", "__").replace(".csv", ".png"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=80)
    plt.close(fig)
    return dest
