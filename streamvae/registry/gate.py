"""The validation gate: promote a retrained model only if it separates anomalies from
normal windows at least as well as the model serving now.

Scores point the same way for both models (-log p(x); higher = more anomalous) but are
on different scales, so each model is judged on its own scale, by rank statistics only:

- ROC AUC of anomalous windows against the held-out normal windows, per source of
  anomalies: ``confirmed`` (windows of alert episodes that really opened, from the
  :class:`~streamvae.core.buffer.AnomalyBank`, keeping only those that still look
  unlike every recent normal window: see :func:`still_anomalous`) and ``synthetic`` (a fixed, seeded set of
  perturbations of the held-out normal windows: spike, level shift, noise burst, stuck
  feature, broken correlation, drift ramp), pooled and per kind;
- the detection rate at the model's own threshold, the ``1 - fpr`` quantile of its
  scores on the same held-out normals (the true-positive rate at a 1 % false-positive
  rate by default: the tail is where alerts are decided).

The rule has two parts. First the data: the whole buffer (training part and held-out
part) is screened per entity by the CURRENT model and by the candidate, and if more than
``max_contamination`` (5 %) of it are robust outliers to BOTH, the candidate is rejected:
it was trained on anomalies (faults stay outliers even to a model trained on them; a new
operating point does not). Then the separation: on pooled ``synthetic`` anomalies the
candidate's AUC must be at least the current model's minus ``tolerance``, and its
detection rate at least the current one's minus ``tolerance`` plus twice the rate's
binomial standard error (a rate on a few hundred windows moves by a few percent by
chance alone). On ``confirmed`` windows (when the bank holds at least ``min_confirmed``)
the candidate must keep at least half of the current model's AUC margin above chance:
those windows are the serving model's own verdicts, and under concept drift many of
them are its false alarms on the new normal, which a good candidate scores lower. Per-kind figures are reported, not
ruled on: a kind neither model sees (a stuck sensor inside the noise band) is a coin
toss for both.

A stale serving model changes what can be ruled on. When its own calibration (the
``1 - fpr`` quantile of its held-out training scores) flags at least ``STALE_FACTOR`` x
``fpr`` of the held-out normals, it no longer fits the plant: it is alarming on the new
normal, and comparing detection at each model's threshold on that new normal favoured
it (drift test: "candidate detects 48% < current 57%" rejected every candidate until
the plant stopped moving, while the stale model kept all 8 pumps in alarm), as the
confirmed windows (its own false alarms then) would. So then only the contamination
check and the AUC rule decide; detection and the confirmed figures are reported, and
the report says the current model was stale (``info["current_stale"]``).

Why this rejects a poisoned buffer and passes concept drift. The held-out normals come
from the same buffer as the training windows, so poison in one is poison in the other.
Judged on a poisoned held-out set, the current model would look WORSE (it rightly scores
the poisoned "normals" high, which counts against it) and the poisoned candidate better
(it learned to call them normal). So the held-out normals are first screened by the
CURRENT model, the one that was validated before and is serving: windows whose score is
a robust outlier among its entity's windows (above median + ``screen_z`` x 1.4826 MAD of
the current model's scores) are left out of the normal reference, and their share of
the buffer is the ``contamination``. Median and MAD are unmoved by up to half of the
windows being anomalous, and a fault is a minority of an entity's windows, while a new
operating point moves ALL of an entity's windows together, so its median moves with
them and only the tail is screened. Measured with a tiny VAE (W=12, F=8) on SensorFeed
(tests/unit/registry/test_gate.py): contamination 0.0-0.2 % on clean data of the same
plant, of a new plant, and with one entity moved to a new plant; 14 % with 30 % of the
buffer anomalous (the mildest anomalous windows, e.g. the first seconds of a drift,
pass as normal) and 9 % with 15 %. A warm-started candidate trained on such a buffer
stops early on an equally poisoned validation split and may separate the remaining
anomalies about as well as the current model, which is why the contamination check
is a rule of its own; the candidate's AUC on the screened-out windows (``suspects``,
reported, not ruled on: chosen by the current model's scores, so biased toward it)
shows what it learned. On the clean remainder, under concept drift the stale model is
the blurry one (every window of the new operating point is somewhat improbable to it)
while the candidate is sharp, so the candidate wins on its own scale. Synthetic perturbations are sized in each feature's noise (a
robust std of first differences of the held-out windows), so they mean the same thing
at any operating point.

Examples
--------
>>> import numpy as np
>>> roc_auc(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0]))
0.8333333333333334
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError

log = logging.getLogger(__name__)

SYNTHETIC_KINDS = ("spike", "level_shift", "noise_burst", "stuck", "broken_correlation", "drift_ramp")
# The serving model is stale on the held-out normals when its own calibration (the 1 - fpr
# quantile of the scores of ITS held-out training windows) flags at least STALE_FACTOR x fpr
# of them: see validate's rule.
STALE_FACTOR = 10.0
# sizes in units of the feature's noise std, chosen so a sharp model still ranks most
# perturbed windows above most normals without every model reaching AUC 1 (where the
# gate could not tell a sharp model from a blurry one)
SPIKE_STD = 6.0
SHIFT_STD = 3.0
BURST_FACTOR = 4.0
RAMP_STD = 5.0


def roc_auc(neg: npt.ArrayLike, pos: npt.ArrayLike) -> float:
    """P(score of an anomaly > score of a normal window), ties counting one half (the
    Mann-Whitney form of the ROC AUC). Scores: higher = more anomalous; NaN left out."""
    n = np.sort(np.asarray(neg, dtype=np.float64))
    p = np.asarray(pos, dtype=np.float64)
    n, p = n[np.isfinite(n)], p[np.isfinite(p)]
    if len(n) == 0 or len(p) == 0:
        return math.nan
    lo = np.searchsorted(n, p, side="left")
    hi = np.searchsorted(n, p, side="right")
    return float(np.mean(lo + 0.5 * (hi - lo)) / len(n))


def noise_std(windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """(F,) robust noise std per feature: MAD of first differences within windows / sqrt 2."""
    d = np.diff(windows.astype(np.float64), axis=1).reshape(-1, windows.shape[2])
    out = np.empty(windows.shape[2])
    for f in range(windows.shape[2]):
        col = d[:, f][np.isfinite(d[:, f])]
        out[f] = 1.4826 * float(np.median(np.abs(col - np.median(col)))) / math.sqrt(2) if len(col) else 0.0
    return np.maximum(out, 1e-6)


def synthetic_anomalies(normals: npt.ArrayLike, n_per_kind: int = 200, seed: int = 0) -> dict[str, npt.NDArray[np.float32]]:
    """A fixed, seeded set of perturbed copies of normal windows (N, W, F), per kind.

    One feature per window (chosen at random) is perturbed, in units of its noise std:
    ``spike`` +/-6 std on 1-3 readings; ``level_shift`` +/-3 std from a random point to the
    end (at least a third of the window); ``noise_burst`` noise x4 over half the window;
    ``stuck`` the feature repeats one value over the whole window; ``broken_correlation``
    the feature is taken from another normal window (its own range, the wrong moment);
    ``drift_ramp`` a linear ramp to +/-5 std.
    """
    x = np.asarray(normals, dtype=np.float32)
    if x.ndim != 3 or len(x) < 2:
        raise DataError(f"need at least 2 normal windows (n, W, F) to perturb; got shape {x.shape}")
    m, w, nf = x.shape
    sd = noise_std(x)
    rng = np.random.default_rng(seed)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for kind in SYNTHETIC_KINDS:
        idx = rng.choice(m, size=min(n_per_kind, m), replace=False)
        y = x[idx].astype(np.float64)
        feats = rng.integers(0, nf, len(idx))
        signs = rng.choice([-1.0, 1.0], len(idx))
        for r, (f, sgn) in enumerate(zip(feats, signs)):
            s = sd[f]
            if kind == "spike":
                k = int(rng.integers(1, 4))
                t0 = int(rng.integers(0, w - k + 1))
                y[r, t0 : t0 + k, f] += sgn * SPIKE_STD * s
            elif kind == "level_shift":
                t0 = int(rng.integers(0, max(1, w - max(1, w // 3)) + 1))
                y[r, t0:, f] += sgn * SHIFT_STD * s
            elif kind == "noise_burst":
                t0 = int(rng.integers(0, w - w // 2 + 1))
                y[r, t0 : t0 + w // 2, f] += math.sqrt(BURST_FACTOR**2 - 1) * s * rng.standard_normal(len(range(t0, min(w, t0 + w // 2))))
            elif kind == "stuck":
                col = y[r, :, f]
                first = col[np.isfinite(col)]
                y[r, :, f] = first[0] if len(first) else np.nan
            elif kind == "broken_correlation":
                other = int(rng.integers(0, m - 1))
                other += other >= idx[r]
                y[r, :, f] = x[other, :, f]
            else:  # drift_ramp
                y[r, :, f] += sgn * RAMP_STD * s * np.arange(1, w + 1) / w
        out[kind] = y.astype(np.float32)
    return out


def _nn_dist(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], exclude_self: bool = False) -> npt.NDArray[np.float64]:
    """Distance from each row of ``a`` to its nearest row of ``b`` (squared-norm expansion, in chunks)."""
    bb = np.einsum("ij,ij->i", b, b)
    out = np.empty(len(a))
    for lo in range(0, len(a), 512):
        c = a[lo : lo + 512]
        d2 = np.einsum("ij,ij->i", c, c)[:, None] + bb[None, :] - 2.0 * c @ b.T
        if exclude_self:
            d2[np.arange(len(c)), np.arange(lo, lo + len(c))] = np.inf
        out[lo : lo + 512] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def still_anomalous(anomalies: npt.ArrayLike, normals: npt.ArrayLike, q: float = 0.99) -> npt.NDArray[np.bool_]:
    """True for the confirmed windows that do not look like any recent normal window.

    A window of a past episode counts as an anomaly only while it is farther (in units of
    each feature's noise std, missing cells as the feature's median) from its nearest
    recent normal window than ``q`` of the recent normals are from theirs. Model-free on
    purpose: the episodes were opened by a model, so they are biased in its favour, and
    after a move to a new operating point most of the stale model's "confirmed" episodes
    are the new normal (measured in tests/unit/offline/test_replay_retrain.py)."""
    n = np.asarray(normals, dtype=np.float64)
    a = np.asarray(anomalies, dtype=np.float64)
    if len(a) == 0 or len(n) < 3:
        return np.zeros(len(a), dtype=bool)
    sd = noise_std(n.astype(np.float32))
    med = np.nanmedian(n.reshape(-1, n.shape[2]), axis=0)
    nz = (np.where(np.isnan(n), med, n) / sd).reshape(len(n), -1)
    az = (np.where(np.isnan(a), med, a) / sd).reshape(len(a), -1)
    limit = float(np.quantile(_nn_dist(nz, nz, exclude_self=True), q))
    return _nn_dist(az, nz) > limit


def screen(scores: npt.ArrayLike, z: float) -> npt.NDArray[np.bool_]:
    """True for the scores kept: not above median + z x 1.4826 MAD (robust to up to half
    of them being outliers)."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    if not ok.any():
        return ok
    med = float(np.median(s[ok]))
    mad = 1.4826 * float(np.median(np.abs(s[ok] - med)))
    return ok & (s <= med + z * max(mad, 1e-12))


@dataclass
class GateReport:
    """The gate's verdict.

    ``passed``: promote the candidate. ``reasons``: one human sentence per failed check
    (for a pass: what was compared). ``metrics``: ``{"current"|"candidate": {source:
    {"auc", "detection", "n"}}}``; ``info``: held-out and screening counts, thresholds.
    """

    passed: bool
    reasons: list[str]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "rejected"
        return f"{verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "metrics": self.metrics, "info": self.info}


def _judge(score: Any, normals: npt.NDArray[np.float32], sources: dict[str, npt.NDArray[np.float32]],
           fpr: float) -> tuple[dict[str, dict[str, float]], float]:
    """One model on its own scale: AUC and detection rate at its own threshold, per source."""
    neg = np.asarray(score(normals), dtype=np.float64)
    neg = neg[np.isfinite(neg)]
    if len(neg) == 0:
        raise DataError("the model gives no finite score on the held-out normal windows")
    thr = float(np.quantile(neg, 1.0 - fpr))
    out: dict[str, dict[str, float]] = {}
    for name, x in sources.items():
        pos = np.asarray(score(x), dtype=np.float64)
        pos = pos[np.isfinite(pos)]
        out[name] = {"auc": roc_auc(neg, pos), "detection": float(np.mean(pos > thr)) if len(pos) else math.nan,
                     "n": float(len(pos))}
    return out, thr


def _screen_by_entity(scores: npt.NDArray[np.float64], entities: Sequence[str] | None, z: float) -> npt.NDArray[np.bool_]:
    """:func:`screen` within each entity (a new operating point moves all of an entity's
    windows together; a fault is a minority of them)."""
    if entities is None:
        return screen(scores, z)
    ent = np.asarray(entities)
    keep = np.zeros(len(scores), dtype=bool)
    for e in np.unique(ent):
        m = ent == e
        keep[m] = screen(scores[m], z)
    return keep


def validate(current: Any, candidate: Any, normals: npt.ArrayLike, anomalies: npt.ArrayLike | None = None,
             tolerance: float = 0.01, seed: int = 0, *, entities: Sequence[str] | None = None,
             trained: npt.ArrayLike | None = None, trained_entities: Sequence[str] | None = None,
             screen_z: float = 4.0, max_contamination: float = 0.05, fpr: float = 0.01,
             min_confirmed: int = 20, n_per_kind: int = 200) -> GateReport:
    """Compare ``candidate`` with ``current`` (anything with ``score_samples``: -log p(x),
    higher = more anomalous) on held-out recent normal windows (N, W, F) that the
    candidate was NOT trained on, and on ``anomalies`` (confirmed alert windows, may be
    None or empty) plus synthetic perturbations of the normals. See the module doc.

    ``trained`` (and ``trained_entities``): the windows the candidate was trained on, for
    the contamination check; ``entities``: the held-out windows' entities.
    """
    x = np.asarray(normals, dtype=np.float32)
    if x.ndim != 3 or len(x) < 20:
        raise DataError(f"the gate needs at least 20 held-out normal windows (n, W, F); got shape {x.shape}")
    if current is None:
        return GateReport(True, ["no current model to compare with: the first model is promoted"],
                          info={"held_out": len(x)})
    # 1. screen the buffer (trained part and held-out part) with the trusted model
    t = np.empty((0, *x.shape[1:]), np.float32) if trained is None else np.asarray(trained, dtype=np.float32)
    ents: list[str] | None = None
    if entities is not None and (trained is None or trained_entities is not None):
        ents = [*(trained_entities or []), *entities]
    both = np.concatenate([t, x])
    all_scores = np.asarray(current.score_samples(both), dtype=np.float64)
    keep_all = _screen_by_entity(all_scores, ents, screen_z)
    keep = keep_all[len(t):]
    clean = x[keep]
    # A window counts against the buffer only if the candidate, trained on it, ALSO finds
    # it a robust outlier within its entity: faults are heterogeneous and rare per kind,
    # so they stay outliers to a model trained on them (measured: the poisoned candidate
    # still separated them from the normals at AUC 0.99), while a new operating point is
    # coherent, and a model trained on it fits it (the stale model alone screened 11% of
    # a buffer made entirely of a new operating point).
    cand_scores = np.asarray(candidate.score_samples(both), dtype=np.float64)
    suspect = ~keep_all & ~_screen_by_entity(cand_scores, ents, screen_z)
    contamination = float(suspect.mean())
    info: dict[str, Any] = {"held_out": int(len(x)), "screened": int(len(x) - keep.sum()),
                            "contamination": round(contamination, 4), "screen_z": screen_z,
                            "max_contamination": max_contamination, "fpr": fpr, "tolerance": tolerance}
    if len(clean) < 20:
        raise DataError(f"only {len(clean)} of {len(x)} held-out windows look normal to the current model; cannot validate")
    # 2. anomaly sources
    synth = synthetic_anomalies(clean, n_per_kind=n_per_kind, seed=seed)
    sources: dict[str, npt.NDArray[np.float32]] = {"synthetic": np.concatenate(list(synth.values()))}
    sources.update({f"synthetic:{k}": v for k, v in synth.items()})
    ruled = ["synthetic"]
    a = None if anomalies is None else np.asarray(anomalies, dtype=np.float32)
    if a is not None and len(a):
        info["confirmed_seen"] = int(len(a))
        a = a[still_anomalous(a, clean)]
    if a is not None and len(a) >= min_confirmed:
        sources["confirmed"] = a
        ruled.insert(0, "confirmed")
    info["confirmed"] = 0 if a is None else int(len(a))
    suspects = both[suspect]
    if len(suspects) >= min_confirmed:  # reported only: chosen by the current model's scores, so biased toward it
        sources["suspects"] = suspects
    # 3. each model on its own scale
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    thresholds: dict[str, float] = {}
    for name, model in (("current", current), ("candidate", candidate)):
        metrics[name], thresholds[name] = _judge(model.score_samples, clean, sources, fpr)
    info["thresholds"] = thresholds
    # 3b. does the serving model still fit these normals? (its own calibration, NaN: unknown)
    ref = getattr(current, "heldout_scores_", None)
    ref = np.asarray([] if ref is None else ref, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    stale_fa = float(np.mean(all_scores[len(t):][keep] > np.quantile(ref, 1 - fpr))) if len(ref) >= 20 else math.nan
    stale = stale_fa >= STALE_FACTOR * fpr  # NaN: False
    info["current_false_alarms"] = round(stale_fa, 4)
    info["current_stale"] = bool(stale)
    # 4. the rule
    reasons: list[str] = []
    compared: list[str] = []
    if contamination > max_contamination:
        msg = (f"the buffer looks contaminated: {contamination:.1%} of its windows are outliers both to the current model "
               f"and to the candidate trained on them (robust z > {screen_z:g} within their entity; at most "
               f"{max_contamination:.0%} allowed)")
        if "suspects" in metrics["candidate"]:
            msg += (f"; the candidate learned to call them normal (AUC of these windows against the held-out normals "
                    f"{metrics['candidate']['suspects']['auc']:.3f}, current {metrics['current']['suspects']['auc']:.3f})")
        reasons.append(msg)
    for src in ruled:
        cur, cand = metrics["current"][src], metrics["candidate"][src]
        if src == "confirmed":
            if stale:
                compared.append(f"confirmed anomalies (not ruled: the current model is stale): AUC {cand['auc']:.3f} vs "
                                f"{cur['auc']:.3f}")
                continue
            # Episode windows are the serving model's own verdicts, not a person's: under
            # concept drift many are its false alarms on the new normal, which a model that
            # learned the new normal rightly scores lower (measured in replay: every
            # drift retrain refused by an "at least as well" rule on them). So the rule
            # here only refuses a candidate that lost more than half of the current
            # model's margin above chance on them: one that learned to call them normal.
            floor = 0.5 + (cur["auc"] - 0.5) / 2.0
            if not cand["auc"] >= floor:  # NaN fails too
                reasons.append(f"candidate AUC on confirmed anomalies {cand['auc']:.3f} < {floor:.3f}, half of the current "
                               f"model's margin above chance (current {cur['auc']:.3f}): it learned to call them normal")
            compared.append(f"confirmed anomalies: AUC {cand['auc']:.3f} vs {cur['auc']:.3f}, "
                            f"detection {cand['detection']:.1%} vs {cur['detection']:.1%}")
            continue
        label = "synthetic anomalies"
        if not cand["auc"] >= cur["auc"] - tolerance:  # NaN fails too
            reasons.append(f"candidate AUC on {label} {cand['auc']:.3f} < current {cur['auc']:.3f} - {tolerance:g}")
        p = cur["detection"]
        slack = tolerance + 2.0 * math.sqrt(max(p * (1 - p), 1e-12) / max(cand["n"], 1.0))
        if not stale and not cand["detection"] >= p - slack:
            reasons.append(f"candidate detects {cand['detection']:.1%} of {label} at its own {fpr:.0%}-false-alarm "
                           f"threshold < current {p:.1%} - {slack:.1%}")
        compared.append(f"{label}: AUC {cand['auc']:.3f} vs {cur['auc']:.3f}, detection {cand['detection']:.1%} vs {p:.1%}")
    passed = not reasons
    if passed:
        reasons = ["candidate separates as well as current (" + "; ".join(compared) + f"; contamination {contamination:.1%})"]
    if stale:
        reasons.append(f"the current model is stale here: its own {fpr:.0%} threshold flags {stale_fa:.1%} of the held-out "
                       f"normals, so detection at each model's threshold and the confirmed windows were reported, not ruled on")
    log.info("gate %s: %s", "passed" if passed else "rejected", "; ".join(reasons))
    return GateReport(passed, reasons, metrics, info)
