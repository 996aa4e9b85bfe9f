"""The simulated plant's physics: every pump's operating point and how its sensors follow the load.

Every entity is a pump of one fleet with its own operating point (within about 8 % of
the fleet's), drawn from ``plant`` and its index alone, so the same plant can be trained
on with one seed and monitored live with another. One latent *load* drives the
correlated sensors:

========== ============================================ ====================
feature    model (L = load around 1, t = epoch seconds) noise std
========== ============================================ ====================
temp       ambient(t) + dT * (L lagged, tau 90 s)        1.0 degC
pressure   p0 * (0.4 + 0.6 L^2)  (pump affinity law)     2 % of p0
flow       flow0 * L                                     3 % of flow0
rpm        rpm0 * L                                      2.5 % of rpm0
vibration  vib0 * (0.6 + 0.4 L^2)                        6 % of vib0
current    i0 * (0.25 + 0.75 L)                          2.5 % of i0
voltage    vnom * (1 - 0.02 (L - 1))  (sag under load)    0.4 % of vnom
humidity   h0 - 8 sin(cycle - 1)  (opposite to ambient)  1.2 %RH
========== ============================================ ====================

How the load moves in time (its cycle, the slow variation of time constant
:data:`TAU_OU`, the temperature lag :data:`TAU_TEMP`) is :mod:`streamvae.offline.feedsim`'s.

Examples
--------
>>> p = Plant.make(plant=0, n=2)
>>> p.noise.shape, Plant.make(plant=0, n=3).rpm0[:2].tolist() == p.rpm0.tolist()
((2, 8), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = ("temp", "pressure", "flow", "rpm", "vibration", "current", "voltage", "humidity")
FEATURE_INDEX = {n: i for i, n in enumerate(FEATURES)}
TAU_OU = 120.0  # seconds: the load's slow random variation (Ornstein-Uhlenbeck)
TAU_TEMP = 90.0  # seconds: how far the temperature lags the load

_F = FEATURE_INDEX
# sensor = operating point * (a + b * load ** power)
_LOAD_MODEL = {"pressure": ("p0", 0.4, 0.6, 2), "flow": ("flow0", 0.0, 1.0, 1), "rpm": ("rpm0", 0.0, 1.0, 1),
               "vibration": ("vib0", 0.6, 0.4, 2), "current": ("i0", 0.25, 0.75, 1)}


@dataclass(frozen=True, slots=True)
class Plant:
    """Operating points, one row per entity; ``noise``: (N, F) absolute noise std."""

    rpm0: np.ndarray
    flow0: np.ndarray
    p0: np.ndarray
    i0: np.ndarray
    vib0: np.ndarray
    vnom: np.ndarray
    amb0: np.ndarray
    dT: np.ndarray
    h0: np.ndarray
    amp: np.ndarray
    phase: np.ndarray
    ou_std: np.ndarray
    noise: np.ndarray

    @classmethod
    def make(cls, plant: int, n: int) -> Plant:
        """The operating points of entities ``0 .. n - 1`` of plant number ``plant``."""
        cols: dict[str, list[float]] = {}
        for i in range(n):
            r = np.random.default_rng([plant, i])  # entity i's operating point does not depend on n
            row = dict(
                rpm0=2400 * r.uniform(0.92, 1.08), flow0=80 * r.uniform(0.92, 1.08), p0=5.5 * r.uniform(0.92, 1.08),
                i0=40 * r.uniform(0.92, 1.08), vib0=3.0 * r.uniform(0.8, 1.2), vnom=400.0, amb0=20 + r.uniform(-2, 2),
                dT=32 * r.uniform(0.9, 1.1), h0=50 + r.uniform(-3, 3), amp=r.uniform(0.10, 0.16), phase=r.normal(0, 0.3),
                ou_std=r.uniform(0.02, 0.03),
            )
            for k, v in row.items():
                cols.setdefault(k, []).append(float(v))
        a = {k: np.asarray(v) for k, v in cols.items()}
        one = np.ones(n)
        noise = np.stack([1.0 * one, 0.02 * a["p0"], 0.03 * a["flow0"], 0.025 * a["rpm0"], 0.06 * a["vib0"],
                          0.025 * a["i0"], 0.004 * a["vnom"], 1.2 * one], axis=1)
        return cls(noise=noise, **a)

    def col(self, name: str, rows: Any = slice(None)) -> np.ndarray:
        """One operating-point column as (rows, 1), to broadcast over time."""
        v: np.ndarray = getattr(self, name)[rows, None]
        return v

    def sensors(self, t: np.ndarray, load: np.ndarray, lag: np.ndarray, period: float) -> np.ndarray:
        """Noise-free readings (N, K, F) for times ``t``, load and lagged load (all (N, K))."""
        site = np.sin(2 * np.pi * t / period + self.col("phase") - 1.0)  # ambient peaks after the load
        out = np.empty((*t.shape, len(FEATURES)))
        out[..., _F["temp"]] = self.col("amb0") + 3.0 * site + self.col("dT") * lag
        out[..., _F["humidity"]] = self.col("h0") - 8.0 * site
        out[..., _F["voltage"]] = self.col("vnom") * (1 - 0.02 * (load - 1))
        self.load_driven(out, load)
        return out

    def load_driven(self, out: np.ndarray, load: np.ndarray, only: int | None = None, rows: Any = slice(None)) -> None:
        """Write the features that follow the load (all, or feature ``only``) into ``out``."""
        for name, (point, a, b, power) in _LOAD_MODEL.items():
            if only is None or _F[name] == only:
                out[..., _F[name]] = self.col(point, rows) * (a + b * load**power)
