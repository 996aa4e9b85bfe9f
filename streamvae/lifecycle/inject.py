"""The kinds of anomaly this project injects, defined once.

The validation gate's synthetic anomalies (:mod:`streamvae.lifecycle.gate.synthetic`) and
the simulated plant's faults (:mod:`streamvae.offline.feed`) both apply them with
:func:`inject`. Each kind changes ONE feature over a stretch of readings, in units of
that feature's noise std ``std``:

==================== ===============================================================
spike                ``+ sign * magnitude * std`` (a few readings)
level_shift          ``+ sign * magnitude * std`` (from a point on)
drift                ``+ sign * magnitude * std * k / steps``, k = 1 .. steps: a ramp
noise_burst          ``+ sqrt(magnitude**2 - 1) * std * N(0, 1)``: the noise std x ``magnitude``
stuck                the feature repeats ``value``
broken_correlation   the feature takes ``value``: plausible on its own, the wrong moment
dead                 the sensor sends nothing (NaN)
==================== ===============================================================

How large, how long, and where the values of ``stuck`` and ``broken_correlation`` come
from is the caller's: the gate sizes its perturbations near the edge of what a sharp
model sees and takes a value from another window; the simulator sizes its faults to be
seen and decouples one sensor from a load surge.

Examples
--------
>>> x = np.zeros(4)
>>> inject("drift", x, std=2.0, magnitude=1.0, sign=1, steps=4)
>>> x.tolist()
[0.5, 1.0, 1.5, 2.0]
>>> inject("stuck", x, value=7.0); x.tolist()
[7.0, 7.0, 7.0, 7.0]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from streamvae.errors import ConfigError

KINDS = ("spike", "level_shift", "drift", "noise_burst", "stuck", "broken_correlation", "dead")


def inject(kind: str, x: npt.NDArray[np.float64], std: float = 1.0, magnitude: float = 0.0, sign: float = 1.0, *,
           step: int = 0, steps: int | None = None, rng: np.random.Generator | None = None,
           value: npt.ArrayLike = math.nan) -> None:
    """Apply one anomaly of ``kind`` to ``x`` in place: a 1-D stretch of one feature.

    ``step`` / ``steps``: a drift's position, ``x`` being readings ``step + 1 ..`` of an
    episode ``steps`` long (default: all of it); ``rng``: a noise burst's noise; ``value``:
    what a stuck or broken_correlation feature shows (a number or an array like ``x``).
    """
    if kind in ("spike", "level_shift"):
        x += sign * magnitude * std
    elif kind == "drift":
        n = len(x) if steps is None else steps
        x += sign * magnitude * std * np.arange(step + 1, step + len(x) + 1) / n
    elif kind == "noise_burst":
        if rng is None:
            raise ValueError("a noise_burst needs rng")
        x += math.sqrt(magnitude**2 - 1) * std * rng.standard_normal(len(x))
    elif kind in ("stuck", "broken_correlation"):
        x[:] = value
    elif kind == "dead":
        x[:] = np.nan
    else:
        raise ConfigError(f"anomaly kind must be one of {', '.join(KINDS)}; got {kind!r}")
