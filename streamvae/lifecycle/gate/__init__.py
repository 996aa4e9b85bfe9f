"""The validation gate, split by concern:

- :mod:`~streamvae.lifecycle.gate.synthetic`: the synthetic anomalies (perturbed copies of
  held-out normal windows, sized in each feature's noise);
- :mod:`~streamvae.lifecycle.gate.screen`: buffer screening (robust outliers per entity,
  confirmed windows that still look anomalous, ROC AUC);
- :mod:`~streamvae.lifecycle.gate.rule`: the rule and its reasons (:func:`validate` ->
  :class:`GateReport`).
"""

from __future__ import annotations

from streamvae.lifecycle.gate.rule import STALE_FACTOR, GateReport, validate
from streamvae.lifecycle.gate.screen import roc_auc, screen, screen_by_entity, still_anomalous
from streamvae.lifecycle.gate.synthetic import SYNTHETIC_KINDS, noise_std, synthetic_anomalies

__all__ = ["STALE_FACTOR", "SYNTHETIC_KINDS", "GateReport", "noise_std", "roc_auc", "screen", "screen_by_entity",
           "still_anomalous", "synthetic_anomalies", "validate"]
