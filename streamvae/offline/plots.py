"""PNG plots: each feature, the score, the threshold and the flagged spans."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    f = np.concatenate([[False], flags.astype(bool), [False]])
    d = np.diff(f.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def plot_series(
    out: str | Path,
    values: np.ndarray,
    names: Sequence[str],
    score: np.ndarray,
    threshold: np.ndarray | float,
    flags: np.ndarray,
    truth: np.ndarray | None = None,
    title: str = "",
    score_label: str = "score: -log p(x)",
) -> Path:
    """One panel per feature, then the score panel; red spans = flagged, grey = labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, f = values.shape
    t = np.arange(n)
    fig, axes = plt.subplots(f + 1, 1, figsize=(12, 1.1 * f + 2.4), sharex=True)
    flagged = _spans(flags)
    labelled = _spans(truth) if truth is not None else []
    for i, ax in enumerate(axes):
        for a, b in labelled:
            ax.axvspan(a, b, color="0.85", lw=0)
        for a, b in flagged:
            ax.axvspan(a, b, color="tab:red", alpha=0.18, lw=0)
        if i < f:
            ax.plot(t, values[:, i], lw=0.7, color="tab:blue")
            ax.set_ylabel(names[i], rotation=0, ha="right", fontsize=7)
            ax.tick_params(labelsize=6)
    ax = axes[-1]
    ax.plot(t, score, lw=0.8, color="k", label=score_label)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), (n,))
    ax.plot(t, thr, lw=0.8, color="tab:red", ls="--", label="threshold")
    finite = score[np.isfinite(score)]
    if len(finite):
        lo, hi = np.quantile(finite, [0.0, 0.99])
        top = max(hi, float(np.nanmax(thr))) if np.isfinite(thr).any() else hi
        ax.set_ylim(lo - 0.05 * (top - lo + 1e-9), top + 0.25 * (top - lo + 1e-9))
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(labelsize=6)
    ax.set_xlabel("row", fontsize=7)
    fig.suptitle(title + ("   (red: flagged, grey: labelled anomaly)" if truth is not None else "   (red: flagged)"), fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
