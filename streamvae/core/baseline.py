"""Per-entity baselines: how a persisting change becomes an entity's new normal.

The model scores windows in its training units. When an entity moves to a new level and
stays there (an episode that lasts ``episodes.accept_after`` windows), the pipeline may
*accept* the move: from then on the entity's readings are re-standardised onto the
training scale before scoring,

    x' = mean0 + (x - centre) * scale0 / scale        (per feature),

with ``centre`` the median of the entity's readings during the episode and ``scale``
the training scale widened by the smallest factor in ``WIDEN`` that makes the
episode's own windows normal again (at most one in ten above the entity's threshold).
If no factor does, the change is not a new level (or spread) but a different behaviour,
and it stays an anomaly: nothing is accepted and the episode goes on. A fault that
comes back after an acceptance is judged against the new baseline, with the usual
sensitivity at most ``WIDEN[-1]`` times coarser.

The fit, in numbers: on the 35 nab-dev files (W = 30, see README), acceptance with this
check caught 42 of 55 windows with 118 false episodes, against 44 and 196 when the
centre alone was moved without the check (every accepted level that was not really
normal re-opened an episode within a few hundred readings).

Examples
--------
>>> import numpy as np
>>> b = Baselines(mean0=[10.0], scale0=[2.0])
>>> w = np.array([[30.0], [31.0]], dtype=np.float32)
>>> b.apply("pump-1", w).tolist()          # no baseline yet: unchanged
[[30.0], [31.0]]
>>> b.set("pump-1", centre=[30.0], scale=[4.0])
>>> b.apply("pump-1", w).tolist()          # 30 is the new 10; one unit is half a unit
[[10.0], [10.5]]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
WIDEN = (1.0, 1.5, 2.25, 3.4)  # scale factors tried, smallest first
NORMAL_SHARE = 0.1  # an accepted baseline leaves at most this share of the episode's windows flagged


class Baselines:
    """Accepted (centre, scale) per entity; entities without one are scored as they come.

    Parameters
    ----------
    mean0, scale0 : (F,) the model scaler's statistics (the training units).
    max_entities : bound on entities with a baseline; the least recently set is dropped
        first (it then scores against the training level again and may be re-accepted).
    """

    def __init__(self, mean0: npt.ArrayLike, scale0: npt.ArrayLike, max_entities: int = 100_000) -> None:
        self.mean0 = np.asarray(mean0, dtype=np.float64)
        self.scale0 = np.asarray(scale0, dtype=np.float64)
        self.max_entities = max_entities
        self._by: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # entity -> (shift, gain)

    def __len__(self) -> int:
        return len(self._by)

    def __contains__(self, entity: object) -> bool:
        return entity in self._by

    def apply(self, entity: str, values: FloatArray) -> FloatArray:
        """The window (W, F) in the entity's accepted baseline; unchanged without one."""
        b = self._by.get(entity)
        if b is None:
            return values
        shift, gain = b
        return np.asarray((values - shift) * gain + self.mean0, dtype=np.float32)

    def transform(self, values: FloatArray, centre: np.ndarray, scale: np.ndarray) -> FloatArray:
        """Windows (..., F) re-standardised with a candidate ``centre`` and ``scale``."""
        return np.asarray((values - centre) * (self.scale0 / scale) + self.mean0, dtype=np.float32)

    def candidates(self, rows: npt.ArrayLike) -> list[tuple[np.ndarray, np.ndarray]]:
        """(centre, scale) to try for an episode's readings (A, F), smallest widening first."""
        r = np.asarray(rows, dtype=np.float64)
        with np.errstate(all="ignore"):
            centre = np.nanmedian(r, axis=0) if len(r) else self.mean0.copy()
        centre = np.where(np.isfinite(centre), centre, self.mean0)
        return [(centre, self.scale0 * f) for f in WIDEN]

    def set(self, entity: str, centre: npt.ArrayLike, scale: npt.ArrayLike) -> None:
        c = np.asarray(centre, dtype=np.float64)
        s = np.asarray(scale, dtype=np.float64)
        self._by[entity] = (c, self.scale0 / s)
        self._by.move_to_end(entity)
        while len(self._by) > self.max_entities:
            self._by.popitem(last=False)

    def get(self, entity: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(centre, scale) of the entity's baseline, or None."""
        b = self._by.get(entity)
        return None if b is None else (b[0], self.scale0 / b[1])

    def reset(self) -> None:
        """Forget every baseline (a new model has its own training units)."""
        self._by.clear()

    def forget(self, entity: str) -> None:
        self._by.pop(entity, None)

    def to_state(self) -> dict[str, Any]:
        return {e: {"centre": c.tolist(), "scale": (self.scale0 / g).tolist()} for e, (c, g) in self._by.items()}

    def load_state(self, d: dict[str, Any]) -> None:
        self._by.clear()
        for e, b in d.items():
            self.set(e, b["centre"], b["scale"])
