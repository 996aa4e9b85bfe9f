"""Where and how the simulated feed's anomalies go: episode placement and injection.

Episodes are placed after a warm-up, never overlapping on one entity and with a quiet
``gap`` between two on the same entity (:func:`schedule`). The kinds are those of
:mod:`streamvae.lifecycle.inject`, which the validation gate's synthetic anomalies apply
too; magnitudes are in units of the feature's noise std for that entity, times ``severity``:

==================== ===================================================================
spike                +/- 10 std for ``spike_duration`` (default 5 s)
level_shift          +/- 5 std for ``duration``
drift                0 -> +/- 8 std, linear over ``duration``
stuck                the sensor repeats its last value before the episode
broken_correlation   the load surges (half-sine, 15 % of nominal) and every sensor
                     follows except one of flow / current / pressure (about 5 std apart)
noise_burst          the noise std is multiplied by 6
dead                 the sensor sends null
==================== ===================================================================

Placement draws from its own random stream (``[seed, 1]``), so the normal data do not
depend on the anomalies.

Examples
--------
>>> from streamvae.offline.feedspec import parse_anomalies
>>> ts = lambda e, k: 100.0 * k + e
>>> plans = schedule(parse_anomalies("spike,dead"), ["a", "b"], steps=1000, interval=1.0,
...                  duration=1000.0, seed=0, ts=ts)
>>> sorted(p.episode.kind for p in plans), all(p.k0 >= 200 for p in plans)
(['dead', 'spike'], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from streamvae.errors import ConfigError
from streamvae.lifecycle.inject import inject
from streamvae.offline.feedplant import FEATURE_INDEX as _F
from streamvae.offline.feedplant import FEATURES
from streamvae.offline.feedspec import AnomalySpec

SPIKE_STD = 10.0
SHIFT_STD = 5.0
DRIFT_STD = 8.0
BURST_FACTOR = 6.0
SURGE_LOAD = 0.15
STUCK_FEATURES = ("temp", "pressure", "flow", "rpm", "current")  # the ones that visibly move
DECOUPLED = ("flow", "current", "pressure")  # broken_correlation: the one that ignores the surge


@dataclass(frozen=True, slots=True)
class Episode:
    """One injected anomaly: ``start_ts``/``end_ts`` are the first and last affected reading.

    ``magnitude``: spike / level_shift / drift (its final offset): noise std; noise_burst:
    the noise std factor; broken_correlation: the peak load surge (fraction of nominal);
    None for stuck and dead. ``direction``: +1 / -1, 0 where it has none.
    ``features``: the affected sensor first; for broken_correlation, then the one it no
    longer follows.
    """

    id: str
    entity: str
    kind: str
    features: tuple[str, ...]
    start_ts: float
    end_ts: float
    magnitude: float | None
    direction: int

    def to_dict(self) -> dict[str, Any]:
        """The episode, JSON-ready (the ground truth's ``episodes``)."""
        return {"id": self.id, "entity": self.entity, "kind": self.kind, "features": list(self.features),
                "start_ts": self.start_ts, "end_ts": self.end_ts, "magnitude": self.magnitude, "direction": self.direction}


@dataclass(slots=True)
class Plan:
    """An episode placed on the feed's grid: entity ``e``, steps ``k0 .. k1`` (inclusive),
    feature ``f``; ``rng`` draws its noise (noise_burst), ``stuck_value`` is set when it starts."""

    episode: Episode
    e: int  # entity index
    k0: int  # first affected step
    k1: int  # last affected step (inclusive)
    f: int  # affected feature index
    stuck_value: float = math.nan
    rng: np.random.Generator | None = field(default=None, repr=False)

    def apply(self, x: np.ndarray, last: np.ndarray, c0: int, c1: int, std: float) -> None:
        """Inject the episode into block ``x`` (N, steps ``c0 .. c1 - 1``, F), noise included;
        ``last``: the previous block's last readings (N, F); ``std``: the sensor's noise std."""
        lo, hi = max(self.k0, c0), min(self.k1, c1 - 1)
        kind = self.episode.kind
        col = x[self.e, lo - c0 : hi + 1 - c0, self.f]
        if kind == "broken_correlation":  # decoupled before the noise (SensorFeed.blocks)
            return
        if kind == "stuck" and self.k0 >= c0:  # the last value before the episode: in this block, or the previous one's last
            self.stuck_value = float(np.round(x[self.e, self.k0 - c0 - 1, self.f] if self.k0 > c0 else last[self.e, self.f], 3))
        inject(kind, col, std, self.episode.magnitude or 0.0, self.episode.direction, step=lo - self.k0,
               steps=self.k1 - self.k0 + 1, rng=self.rng, value=self.stuck_value)


def schedule(spec: AnomalySpec, entity_ids: list[str], steps: int, interval: float, duration: float, seed: int,
             ts: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[Plan]:
    """Place ``spec``'s episodes on ``len(entity_ids)`` entities of ``steps`` readings each,
    ``interval`` seconds apart; ``ts(e, k)``: epoch seconds of entity ``e``'s reading ``k``.
    Plans come in time order; a ``ConfigError`` when they do not fit."""
    if spec.total == 0:
        return []
    entities = len(entity_ids)
    dt = interval
    warmup = 0.2 * duration if spec.warmup is None else spec.warmup
    n_of = {k: max(1, round((spec.spike_duration if k == "spike" else spec.duration) / dt)) for k, _ in spec.counts}
    gap = math.ceil(spec.gap / dt)
    longest = max(n_of.values())
    slot = longest + gap + max(1, longest // 2)  # one episode, the quiet gap after it, room to jitter the start
    first = math.ceil(warmup / dt)
    per_entity = max(0, (steps - first) // slot)
    if spec.total > per_entity * entities:
        raise ConfigError(
            f"anomaly spec {spec.text!r}: {spec.total} episodes of up to {longest * dt:g} s, each followed by a "
            f"{spec.gap:g} s gap, do not fit in {duration:g} s after a {warmup:g} s warm-up on {entities} "
            f"entities (room for {per_entity * entities}); lengthen the duration, add entities, or lower count/duration/gap/warmup"
        )
    rng = np.random.default_rng([seed, 1])  # its own stream: the normal data do not depend on it
    kinds = [k for k, c in spec.counts for _ in range(c)]
    rng.shuffle(kinds)
    slots = rng.choice(per_entity * entities, size=len(kinds), replace=False)
    raw = []
    for kind, s in zip(kinds, slots):
        e, j = divmod(int(s), per_entity)
        n = n_of[kind]
        k0 = first + j * slot + int(rng.integers(0, slot - gap - n + 1))
        raw.append((kind, e, k0, k0 + n - 1))
    raw.sort(key=lambda r: (r[2], r[1]))
    plans = []
    for idx, (kind, e, k0, k1) in enumerate(raw):
        sev = spec.severity
        direction = int(rng.choice([-1, 1]))
        mag: float | None
        if kind == "stuck":
            f, feats, mag, direction = _F[str(rng.choice(STUCK_FEATURES))], None, None, 0
        elif kind == "dead":
            f, feats, mag, direction = int(rng.integers(len(FEATURES))), None, None, 0
        elif kind == "broken_correlation":
            f = _F[str(rng.choice(DECOUPLED))]
            feats, mag = (FEATURES[f], "rpm"), SURGE_LOAD * sev
        elif kind == "noise_burst":
            f, feats, mag, direction = int(rng.integers(len(FEATURES))), None, 1 + (BURST_FACTOR - 1) * sev, 0
        else:
            f, feats = int(rng.integers(len(FEATURES))), None
            mag = {"spike": SPIKE_STD, "level_shift": SHIFT_STD, "drift": DRIFT_STD}[kind] * sev
        ts0, ts1 = (float(ts(np.array(e), np.array(k))) for k in (k0, k1))
        ep = Episode(f"a{idx + 1:03d}", entity_ids[e], kind, feats or (FEATURES[f],), ts0, ts1,
                     None if mag is None else round(mag, 4), direction)
        plans.append(Plan(ep, e, k0, k1, f, rng=np.random.default_rng([seed, 2, idx])))
    return plans
