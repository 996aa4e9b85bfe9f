"""The report's figure of one entity: its features, then its score and threshold, alert
episodes shaded and labelled with their top features, model version changes marked.

Long series are thinned to a min/max envelope of at most ``MAX_POINTS`` points per line,
so a spike survives and a week of 1 Hz readings still makes a PNG of tens of kB.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from typing import Any

import numpy as np

from streamvae.offline.reportdata import Episode, Series

MAX_POINTS = 1600  # per line (a figure is 800 px wide); 2 points (min, max) per bucket of a longer series
DPI = 80


def when(t: float) -> str:
    """Epoch seconds as ``YYYY-mm-dd HH:MM:SS`` UTC.

    >>> when(1767225600.0)
    '2026-01-01 00:00:00'
    """
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def thin(ts: np.ndarray, y: np.ndarray, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: each bucket's min and max (in time order), NaN kept as gaps.

    >>> t, v = thin(np.arange(10.0), np.array([0, 5, 1, 1, 1, 1, 1, 1, -3, 1.0]), 4)
    >>> v.tolist()
    [0.0, 5.0, 1.0, -3.0]
    """
    n, max_points = len(ts), max_points or MAX_POINTS
    if n <= max_points:
        return ts, y
    edges = np.linspace(0, n, max_points // 2 + 1).astype(int)
    tt, yy = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = y[a:b]
        if not np.isfinite(seg).any():
            tt += [ts[a]]
            yy += [np.nan]
            continue
        i, j = a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))
        for k in sorted({i, j}):
            tt.append(ts[k])
            yy.append(y[k])
    return np.asarray(tt), np.asarray(yy)


def _dt(ts: np.ndarray) -> np.ndarray:
    return (np.asarray(ts, dtype=float) * 1000).astype("datetime64[ms]")


def _at(t: float) -> np.datetime64:
    return np.datetime64(int(round(t * 1000)), "ms")


def _changes(s: Series) -> list[tuple[float, str]]:
    """(time, version) where the serving model changes (the first version included)."""
    out: list[tuple[float, str]] = []
    for t, v in zip(s.score_ts, s.version):
        if v and (not out or out[-1][1] != v):
            out.append((float(t), v))
    return out


def top_text(top: tuple[tuple[str, float], ...], k: int = 3) -> str:
    """``pressure .71, rpm .12``: the top ``k`` features and their shares."""
    return ", ".join(f"{n} {s:.2f}".replace(" 0.", " .") for n, s in top[:k])


def entity_figure(entity: str, s: Series, features: list[str], episodes: list[Episode]) -> Any:
    """The matplotlib Figure of one entity (see the module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = s.values.shape[1] if len(s.values) and s.values.ndim == 2 else 0
    fig, axes = plt.subplots(f + 1, 1, figsize=(11, 0.55 * f + 2.4), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1] * f + [3]})
    axes = axes[:, 0]
    last = max([float(a.max()) for a in (s.ts, s.score_ts) if len(a)] or [0.0])
    changes = _changes(s)
    for ax in axes:
        for ep in episodes:
            ax.axvspan(_at(ep.start), _at(last if ep.end is None else ep.end),
                       color="tab:red", alpha=0.15, lw=0)
        for tc, _ in changes[1:]:
            ax.axvline(_at(tc), color="tab:purple", lw=0.9, ls=":")
        ax.tick_params(labelsize=6)
    for i in range(f):
        tt, v = thin(s.ts, s.values[:, i])
        # not antialiased: noisy readings drawn smooth make a PNG 4x larger (190 kB vs 50 kB a figure)
        axes[i].plot(_dt(tt), v, lw=0.6, color="tab:blue", antialiased=False)
        axes[i].set_ylabel(features[i], rotation=0, ha="right", va="center", fontsize=7)
    ax = axes[-1]
    if len(s.score_ts):
        tt, v = thin(s.score_ts, s.score)
        ax.plot(_dt(tt), v, lw=0.7, color="k", label="score: -log p(x), higher = more anomalous")
        tt, v = thin(s.score_ts, s.threshold)
        ax.plot(_dt(tt), v, lw=0.9, color="tab:red", ls="--", label="threshold")
        _limits(ax, s.score, s.threshold)
        ax.legend(fontsize=6, loc="upper left")
    ax.set_ylabel("score", fontsize=7)
    for n, ep in enumerate(episodes):  # staggered: episodes close in time would print over each other
        ax.text(_at(ep.start), 0.97 - 0.1 * (n % 3), f" {n + 1}: {top_text(ep.top, 2) or '?'}",
                transform=ax.get_xaxis_transform(), fontsize=6, va="top", color="darkred", clip_on=True)
    for tc, vc in changes[1:]:
        ax.text(_at(tc), 0.02, f" model {vc[:28]}", transform=ax.get_xaxis_transform(), fontsize=6,
                color="tab:purple", va="bottom")
    ax.set_xlabel("time (UTC)", fontsize=7)
    model = f"model {changes[0][1]}" + (f" then {len(changes) - 1} more (purple)" if len(changes) > 1 else "") if changes else ""
    fig.suptitle(f"{entity}   {model}   (red: alert episodes, numbered, with their top features)", fontsize=8)
    fig.tight_layout(h_pad=0.2)
    return fig


def _limits(ax: Any, score: np.ndarray, thr: np.ndarray) -> None:
    """Zoom on what matters: up to the 99.5th percentile of the scores or the threshold,
    whichever is higher, with room above (a huge spike goes off the top, marked by the shading)."""
    finite = score[np.isfinite(score)]
    if not len(finite):
        return
    lo, hi = (float(x) for x in np.quantile(finite, [0.0, 0.995]))
    t = thr[np.isfinite(thr)]
    top = max(hi, float(t.max())) if len(t) else hi
    pad = top - lo + 1e-9
    ax.set_ylim(lo - 0.05 * pad, top + 0.3 * pad)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"optimize": True})
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
