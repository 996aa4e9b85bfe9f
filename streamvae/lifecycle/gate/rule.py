"""The gate's rule: promote a retrained model only if it separates anomalies from
normal windows at least as well as the model serving now.

Scores point the same way for both models (-log p(x); higher = more anomalous) but are
on different scales, so each model is judged on its own scale, by rank statistics only:

- ROC AUC of anomalous windows against the held-out normal windows, per source of
  anomalies: ``confirmed`` (windows of alert episodes that really opened, from the
  :class:`~streamvae.lifecycle.bank.AnomalyBank`, keeping only those that still look
  unlike every recent normal window: see
  :func:`~streamvae.lifecycle.gate.screen.still_anomalous`) and ``synthetic`` (a fixed, seeded set of
  perturbations of the held-out normal windows: spike, level shift, noise burst, stuck
  feature, broken correlation, drift: :mod:`~streamvae.lifecycle.gate.synthetic`), pooled and per kind;
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
them are its false alarms on the new normal, which a good candidate scores lower.
Per-kind figures are reported, not ruled on: a kind neither model sees (a stuck sensor
inside the noise band) is a coin toss for both.

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
the current model's scores) are left out of the normal reference, and the share of the
buffer that the candidate, trained on it, ALSO finds robust outliers is the
``contamination``. Median and MAD are unmoved by up to half of the
windows being anomalous, and a fault is a minority of an entity's windows, while a new
operating point moves ALL of an entity's windows together, so its median moves with
them and only the tail is screened. Measured with a tiny VAE (W=12, F=8) on SensorFeed
(tests/unit/lifecycle/test_gate.py): contamination 0.0-0.2 % on clean data of the same
plant, of a new plant, and with one entity moved to a new plant; 14 % with 30 % of the
buffer anomalous (the mildest anomalous windows, e.g. the first seconds of a drift,
pass as normal) and 9 % with 15 %. A warm-started candidate trained on such a buffer
stops early on an equally poisoned validation split and may separate the remaining
anomalies about as well as the current model, which is why the contamination check
is a rule of its own; the candidate's AUC on the screened-out windows (``suspects``,
reported, not ruled on: chosen by the current model's scores, so biased toward it)
shows what it learned. On the clean remainder, under concept drift the stale model is
the blurry one (every window of the new operating point is somewhat improbable to it)
while the candidate is sharp, so the candidate wins on its own scale.

Examples
--------
>>> class Model:
...     def __init__(self, k): self.k = k
...     def score_samples(self, w): return self.k * np.abs(w).reshape(len(w), -1).max(axis=1)
>>> normals = np.random.default_rng(0).normal(0, 1, (100, 8, 2)).astype(np.float32)
>>> report = validate(Model(1.0), Model(2.0), normals, seed=1)
>>> report.passed, report.info["contamination"]
(True, 0.0)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.lifecycle.gate.screen import roc_auc, screen_by_entity, still_anomalous
from streamvae.lifecycle.gate.synthetic import synthetic_anomalies

log = logging.getLogger(__name__)

# The serving model is stale on the held-out normals when its own calibration (the 1 - fpr
# quantile of the scores of ITS held-out training windows) flags at least STALE_FACTOR x fpr
# of them: see validate's rule.
STALE_FACTOR = 10.0


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
    keep_all = screen_by_entity(all_scores, ents, screen_z)
    keep = keep_all[len(t):]
    clean = x[keep]
    # A window counts against the buffer only if the candidate, trained on it, ALSO finds
    # it a robust outlier within its entity: faults are heterogeneous and rare per kind,
    # so they stay outliers to a model trained on them (measured: the poisoned candidate
    # still separated them from the normals at AUC 0.99), while a new operating point is
    # coherent, and a model trained on it fits it (the stale model alone screened 11% of
    # a buffer made entirely of a new operating point).
    cand_scores = np.asarray(candidate.score_samples(both), dtype=np.float64)
    suspect = ~keep_all & ~screen_by_entity(cand_scores, ents, screen_z)
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
