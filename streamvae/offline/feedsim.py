"""The simulated feed itself: :class:`SensorFeed`, a deterministic multi-entity sensor feed.

``L = 1 + amp * sin(2 pi t / period + phase) + OU(tau 120 s)``: the load of every pump
(:mod:`streamvae.offline.feedplant` turns it into readings) follows a daily-like cycle
(its ``period`` is configurable so a short demo sees whole cycles) plus slow random
variation. Readings come at a fixed interval per entity, ``entities / rate`` seconds, the
entities staggered within the interval, so the whole feed is in strict time order.
Anomalies are placed and injected by :mod:`streamvae.offline.feedepisodes`.

Examples
--------
>>> feed = SensorFeed(entities=2, rate=2.0, duration=10, seed=3)
>>> [r["ts"] - feed.start_ts for r in feed.records()][:4]
[0.0, 0.5, 1.0, 1.5]
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from streamvae.errors import ConfigError
from streamvae.lifecycle.inject import inject
from streamvae.offline.feedepisodes import Plan, schedule
from streamvae.offline.feedplant import FEATURE_INDEX as _F
from streamvae.offline.feedplant import FEATURES, TAU_OU, TAU_TEMP, Plant
from streamvae.offline.feedspec import AnomalySpec, parse_anomalies

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed start keeps a seeded feed reproducible
_CHUNK = 1024  # steps per block; part of what a seed means (noise is drawn block by block)


class SensorFeed:
    """A deterministic feed of ``entities`` pumps, ``rate`` readings per second in all.

    Parameters
    ----------
    entities : number of entities (``pump-01`` ...).
    rate : readings per second across all entities; each entity reads every
        ``entities / rate`` seconds.
    duration : seconds of event time.
    anomalies : an :class:`AnomalySpec` or its text (see :func:`parse_anomalies`).
    seed : noise, anomaly placement. ``plant``: the entities' operating points.
    period : seconds of one load cycle (the "day").
    start_ts : epoch seconds of the first reading.
    shift, shift_at, shift_over : a new operating point (concept drift, NOT an anomaly):
        from ``shift_at`` seconds after the start, the plant's mean load moves from 1 to
        ``1 + shift``, linearly over ``shift_over`` seconds, and stays there. Every
        load-driven sensor follows it consistently (pressure, flow, rpm, vibration,
        current, voltage sag, temperature with its lag), so the new data are normal for
        the plant but outside what a model trained before the move has seen.
    """

    def __init__(self, entities: int = 10, rate: float = 10.0, duration: float = 600.0,
                 anomalies: AnomalySpec | str | None = None, seed: int = 0, plant: int = 0,
                 period: float = 600.0, start_ts: float = DEFAULT_START, shift: float = 0.0,
                 shift_at: float | None = None, shift_over: float = 600.0) -> None:
        if isinstance(entities, bool) or not isinstance(entities, int) or not 1 <= entities <= 100_000:
            raise ConfigError(f"entities must be an int in [1, 100000]; got {entities!r}")
        for name, v, hi in (("rate", rate, 1e6), ("duration", duration, 1e8), ("period", period, 1e8)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v <= hi):
                raise ConfigError(f"{name} must be a number in (0, {hi:g}]; got {v!r}")
        if not isinstance(start_ts, (int, float)) or not math.isfinite(start_ts):
            raise ConfigError(f"start_ts must be finite epoch seconds; got {start_ts!r}")
        if not isinstance(shift, (int, float)) or not -0.5 < shift < 1.0:
            raise ConfigError(f"shift must be a change of mean load in (-0.5, 1); got {shift!r}")
        if shift_at is not None and not (isinstance(shift_at, (int, float)) and shift_at >= 0):
            raise ConfigError(f"shift_at must be seconds >= 0 after the start; got {shift_at!r}")
        if not isinstance(shift_over, (int, float)) or not shift_over > 0:
            raise ConfigError(f"shift_over must be seconds > 0; got {shift_over!r}")
        self.shift = float(shift)
        self.shift_at = None if shift_at is None else float(shift_at)
        self.shift_over = float(shift_over)
        self.entities = entities
        self.rate = float(rate)
        self.duration = float(duration)
        self.seed = seed
        self.plant = plant
        self.period = float(period)
        self.start_ts = float(start_ts)
        self.interval = entities / self.rate
        self.steps = int(round(self.duration / self.interval))
        if self.steps < 1:
            raise ConfigError(f"duration {duration:g} s at rate {rate:g}/s over {entities} entities gives no reading per entity "
                              f"(each reads every {self.interval:g} s); lengthen the duration or raise the rate")
        width = max(2, len(str(entities)))
        self.entity_ids = [f"pump-{i + 1:0{width}d}" for i in range(entities)]
        self.spec = anomalies if isinstance(anomalies, AnomalySpec) else parse_anomalies(anomalies)
        self._plant = Plant.make(plant, entities)
        self._plans: list[Plan] = schedule(self.spec, self.entity_ids, self.steps, self.interval, self.duration,
                                           self.seed, self._ts)
        self.episodes = [p.episode for p in self._plans]

    @property
    def n_records(self) -> int:
        """Readings in the whole feed: entities x steps."""
        return self.entities * self.steps

    @property
    def end_ts(self) -> float:
        """Epoch seconds of the last reading."""
        return float(self._ts(np.array(self.entities - 1), np.array(self.steps - 1)))

    def noise_std(self, entity: str, feature: str) -> float:
        """The noise std of one sensor: the unit of the anomaly magnitudes."""
        try:
            return float(self._plant.noise[self.entity_ids.index(entity), _F[feature]])
        except (ValueError, KeyError):
            raise ConfigError(f"no sensor {feature!r} on entity {entity!r}; entities {self.entity_ids[0]}..{self.entity_ids[-1]}, "
                              f"features {', '.join(FEATURES)}") from None

    def _ts(self, e: np.ndarray, k: np.ndarray) -> np.ndarray:
        # the one formula for a reading's time, shared by the records and the ground truth
        return np.round(self.start_ts + k * self.interval + e * (self.interval / self.entities), 6)

    # -- generation -------------------------------------------------------------------------

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ts, values)`` blocks in time order: ts (N, K) epoch seconds, values (N, K, F), NaN = null."""
        p, n, dt = self._plant, self.entities, self.interval
        rng = np.random.default_rng(self.seed)
        a_ou = math.exp(-dt / TAU_OU)
        b_tmp = math.exp(-dt / TAU_TEMP)
        ou = p.ou_std * rng.standard_normal(n)
        w = 2 * np.pi / self.period
        # the lagged load starts at the steady-state response of the lag to the cycle
        att = 1 / math.sqrt(1 + (w * TAU_TEMP) ** 2)
        t0 = self._ts(np.arange(n), np.zeros(n))
        lag = 1 + p.amp * att * np.sin(w * t0 + p.phase - math.atan(w * TAU_TEMP))
        last = np.full((n, len(FEATURES)), np.nan)
        ents = np.arange(n)[:, None]
        for c0 in range(0, self.steps, _CHUNK):
            c1 = min(c0 + _CHUNK, self.steps)
            k = np.arange(c0, c1)[None, :]
            t = self._ts(ents, k)
            eps = rng.standard_normal((n, c1 - c0))
            noise = rng.standard_normal((n, c1 - c0, len(FEATURES))) * p.noise[:, None, :]
            live = [q for q in self._plans if q.k1 >= c0 and q.k0 < c1]
            surge = np.zeros_like(t)
            for q in live:
                if q.episode.kind == "broken_correlation":
                    ks = np.arange(max(q.k0, c0), min(q.k1, c1 - 1) + 1)
                    peak = q.episode.direction * (q.episode.magnitude or 0.0)
                    surge[q.e, ks - c0] = peak * np.sin(np.pi * (ks - q.k0 + 0.5) / (q.k1 - q.k0 + 1))
            base = self._level(t) + p.amp[:, None] * np.sin(w * t + p.phase[:, None])
            ou_k = np.empty_like(t)
            lag_k = np.empty_like(t)
            load = np.empty_like(t)
            c_ou = p.ou_std * math.sqrt(1 - a_ou**2)
            for j in range(c1 - c0):
                ou = a_ou * ou + c_ou * eps[:, j]
                ou_k[:, j] = ou
                load[:, j] = base[:, j] + ou + surge[:, j]
                lag = b_tmp * lag + (1 - b_tmp) * load[:, j]
                lag_k[:, j] = lag
            x = p.sensors(t, load, lag_k, self.period)
            for q in (q for q in live if q.episode.kind == "broken_correlation"):
                js = slice(max(q.k0, c0) - c0, min(q.k1, c1 - 1) + 1 - c0)
                # the decoupled sensor follows the load without the surge
                alone = x[q.e : q.e + 1, js].copy()
                p.load_driven(alone, (base + ou_k)[q.e : q.e + 1, js], only=q.f, rows=slice(q.e, q.e + 1))
                inject("broken_correlation", x[q.e, js, q.f], value=alone[0, :, q.f])
            x += noise
            for q in live:
                q.apply(x, last, c0, c1, float(p.noise[q.e, q.f]))
            last = x[:, -1, :].copy()
            yield t, x

    def _level(self, t: np.ndarray) -> np.ndarray | float:
        """The plant's mean load at times ``t``: 1, or moving to ``1 + shift`` (see shift)."""
        if self.shift == 0.0 or self.shift_at is None:
            return 1.0
        ramp = np.clip((t - (self.start_ts + self.shift_at)) / self.shift_over, 0.0, 1.0)
        return 1.0 + self.shift * ramp

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole feed at once: ts (N, T) and values (N, T, F), NaN = null (for tests and plots)."""
        parts = list(self.blocks())
        return np.concatenate([t for t, _ in parts], axis=1), np.concatenate([v for _, v in parts], axis=1)

    def records(self) -> Iterator[dict[str, Any]]:
        """Input records (DESIGN.md) in time order: ``{"entity", "ts", "values": {name: float | None}}``."""
        ids = self.entity_ids
        for t, x in self.blocks():
            ts = t.T.tolist()
            vals = np.round(x, 3).transpose(1, 0, 2).tolist()
            for ts_k, v_k in zip(ts, vals):
                for e, (tse, row) in enumerate(zip(ts_k, v_k)):
                    yield {"entity": ids[e], "ts": tse,
                           "values": {n: (v if v == v else None) for n, v in zip(FEATURES, row)}}

    def truth(self) -> dict[str, Any]:
        """Ground truth, JSON-ready: the feed's settings and every episode."""
        s = self.spec
        return {
            "feed": {"entities": self.entity_ids, "features": list(FEATURES), "rate": self.rate, "interval": self.interval,
                     "duration": self.duration, "records": self.n_records, "start_ts": self.start_ts, "end_ts": self.end_ts,
                     "period": self.period, "seed": self.seed, "plant": self.plant},
            "anomalies": {"spec": s.text, "counts": dict(s.counts), "duration": s.duration, "spike_duration": s.spike_duration,
                          "severity": s.severity, "gap": s.gap,
                          "warmup": 0.2 * self.duration if s.warmup is None else s.warmup},
            "episodes": [e.to_dict() for e in self.episodes],
        }
