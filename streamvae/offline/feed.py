"""A synthetic plant: a multi-entity sensor feed with labelled, injected anomalies (NumPy only).

Every entity (``pump-01``, ``pump-02``, ...) is a pump of one fleet with its own operating
point (within about 8 % of the fleet's), drawn from ``plant`` and its index alone, so the
same plant can be trained on with one ``seed`` and monitored live with another. One latent
*load* drives the correlated sensors:

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

``L = 1 + amp * sin(2 pi t / period + phase) + OU(tau 120 s)``: a daily-like cycle (its
``period`` is configurable so a short demo sees whole cycles) plus slow random variation.
Readings come at a fixed interval per entity, ``entities / rate`` seconds, the entities
staggered within the interval, so the whole feed is in strict time order.

Anomalies (``parse_anomalies``) are placed after a warm-up, never overlapping on one entity
and with a quiet ``gap`` between two on the same entity. The kinds are those of
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

Measured once against this project's VAE (window 60, trained 30 epochs on
``write_training_csvs(entities=4, seconds=7200)``, then ``streamvae replay --model`` over
``SensorFeed(4, 4.0, 7200, "all:2", seed=12)`` written by ``write_csv``): windows overlapping
a spike, level_shift, drift, noise_burst or broken_correlation were flagged 75-97 % of the
time; stuck and dead never were. A dead sensor is missing data, which the model leaves out
of the likelihood by design; a value stuck inside the noise band for 60 s looks normal
(a longer ``duration`` lets the cycle move away from it).

The normal data do not depend on the anomalies: with one ``seed`` the feed outside the
episodes is the same with or without them (only ``temp`` lags a broken_correlation surge
for a few minutes, as it lags any load change).

Examples
--------
>>> feed = SensorFeed(entities=3, rate=3.0, duration=600, anomalies="level_shift,dead", seed=1)
>>> feed.n_records, [e.kind for e in feed.episodes]
(1800, ['dead', 'level_shift'])
>>> first = next(iter(feed.records()))
>>> first["entity"], sorted(first["values"]) == sorted(FEATURES)
('pump-01', True)
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from streamvae.errors import ConfigError, DataError
from streamvae.lifecycle.inject import KINDS as INJECT_KINDS
from streamvae.lifecycle.inject import inject

FEATURES = ("temp", "pressure", "flow", "rpm", "vibration", "current", "voltage", "humidity")
KINDS = ("spike", "level_shift", "drift", "stuck", "broken_correlation", "noise_burst", "dead")  # spec order
assert set(KINDS) == set(INJECT_KINDS)
DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed start keeps a seeded feed reproducible

SPIKE_STD = 10.0
SHIFT_STD = 5.0
DRIFT_STD = 8.0
BURST_FACTOR = 6.0
SURGE_LOAD = 0.15
STUCK_FEATURES = ("temp", "pressure", "flow", "rpm", "current")  # the ones that visibly move
DECOUPLED = ("flow", "current", "pressure")  # broken_correlation: the one that ignores the surge

_F = {n: i for i, n in enumerate(FEATURES)}
# sensor = operating point * (a + b * load ** power)
_LOAD_MODEL = {"pressure": ("p0", 0.4, 0.6, 2), "flow": ("flow0", 0.0, 1.0, 1), "rpm": ("rpm0", 0.0, 1.0, 1),
               "vibration": ("vib0", 0.6, 0.4, 2), "current": ("i0", 0.25, 0.75, 1)}
_TAU_OU = 120.0
_TAU_TEMP = 90.0
_CHUNK = 1024  # steps per block; part of what a seed means (noise is drawn block by block)
_SPEC_KEYS = ("duration", "spike_duration", "severity", "warmup", "gap")
_GRAMMAR = (
    "expected comma-separated KIND[:COUNT] and KEY=VALUE items, e.g. 'spike:2,level_shift,drift,duration=90'; "
    f"kinds: {', '.join(KINDS)}, all (COUNT of every kind), none; keys: {', '.join(_SPEC_KEYS)}"
)


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """What to inject: how many of each kind, and how long and how strong.

    ``duration``: seconds of every episode but spikes; ``spike_duration``: seconds of a spike;
    ``severity``: multiplies every magnitude; ``warmup``: seconds at the start with no
    anomaly (None: 20 % of the feed); ``gap``: quiet seconds between two episodes of one
    entity, and after the last one.
    """

    counts: tuple[tuple[str, int], ...] = ()
    duration: float = 60.0
    spike_duration: float = 5.0
    severity: float = 1.0
    warmup: float | None = None
    gap: float = 60.0
    text: str = ""

    @property
    def total(self) -> int:
        return sum(c for _, c in self.counts)


def parse_anomalies(text: str | None) -> AnomalySpec:
    """Parse an anomaly spec; a bad one is a ``ConfigError`` naming the spec and the item.

    Grammar: comma-separated items, each ``KIND``, ``KIND:COUNT``, ``all[:COUNT]`` (that many
    of every kind) or ``KEY=VALUE``; counts of a kind named twice add up. ``""`` or ``none``:
    no anomalies.

    Examples
    --------
    >>> s = parse_anomalies("spike:2,level_shift,duration=90")
    >>> s.counts, s.duration, s.total
    ((('spike', 2), ('level_shift', 1)), 90.0, 3)
    >>> parse_anomalies("all").total
    7
    >>> try:
    ...     parse_anomalies("spikes:2")
    ... except ConfigError as e:
    ...     print(str(e)[:48])
    anomaly spec 'spikes:2': unknown kind 'spikes';
    """
    spec = "" if text is None else text.strip()
    if spec.lower() in ("", "none"):
        return AnomalySpec(text=spec)

    def bad(why: str) -> ConfigError:
        return ConfigError(f"anomaly spec {spec!r}: {why}; {_GRAMMAR}")

    counts: dict[str, int] = {}
    opts: dict[str, float] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise bad("empty item")
        if "=" in item:
            key, _, val = (p.strip() for p in item.partition("="))
            if key not in _SPEC_KEYS:
                raise bad(f"unknown key {key!r}")
            try:
                v = float(val)
            except ValueError:
                raise bad(f"{key} must be a number; got {val!r}") from None
            if not math.isfinite(v) or v < 0 or (v == 0 and key in ("duration", "spike_duration", "severity")):
                raise bad(f"{key} must be a finite number {'>= 0' if key in ('warmup', 'gap') else '> 0'}; got {val!r}")
            opts[key] = v
            continue
        kind, colon, num = (p.strip() for p in item.partition(":"))
        if kind not in KINDS and kind != "all":
            raise bad(f"unknown kind {kind!r}")
        n = 1
        if colon:
            if not num.isdigit() or int(num) < 1:
                raise bad(f"count of {kind} must be an int >= 1; got {num!r}")
            n = int(num)
        for k in KINDS if kind == "all" else (kind,):
            counts[k] = counts.get(k, 0) + n
    if opts.get("severity", 1.0) > 10:
        raise bad(f"severity must be at most 10; got {opts['severity']}")
    ordered = tuple((k, counts[k]) for k in sorted(counts, key=list(counts).index))
    return AnomalySpec(counts=ordered, text=spec, **opts)


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
        return {"id": self.id, "entity": self.entity, "kind": self.kind, "features": list(self.features),
                "start_ts": self.start_ts, "end_ts": self.end_ts, "magnitude": self.magnitude, "direction": self.direction}


@dataclass(slots=True)
class _Plan:
    episode: Episode
    e: int  # entity index
    k0: int  # first affected step
    k1: int  # last affected step (inclusive)
    f: int  # affected feature index
    stuck_value: float = math.nan
    rng: np.random.Generator | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Plant:
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
    def make(cls, plant: int, n: int) -> _Plant:
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
        self._plant = _Plant.make(plant, entities)
        self._plans = self._schedule()
        self.episodes = [p.episode for p in self._plans]

    @property
    def n_records(self) -> int:
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

    # -- anomaly placement ------------------------------------------------------------------

    def _schedule(self) -> list[_Plan]:
        spec = self.spec
        if spec.total == 0:
            return []
        dt = self.interval
        warmup = 0.2 * self.duration if spec.warmup is None else spec.warmup
        n_of = {k: max(1, round((spec.spike_duration if k == "spike" else spec.duration) / dt)) for k, _ in spec.counts}
        gap = math.ceil(spec.gap / dt)
        longest = max(n_of.values())
        slot = longest + gap + max(1, longest // 2)  # one episode, the quiet gap after it, room to jitter the start
        first = math.ceil(warmup / dt)
        per_entity = max(0, (self.steps - first) // slot)
        if spec.total > per_entity * self.entities:
            raise ConfigError(
                f"anomaly spec {spec.text!r}: {spec.total} episodes of up to {longest * dt:g} s, each followed by a "
                f"{spec.gap:g} s gap, do not fit in {self.duration:g} s after a {warmup:g} s warm-up on {self.entities} "
                f"entities (room for {per_entity * self.entities}); lengthen the duration, add entities, or lower count/duration/gap/warmup"
            )
        rng = np.random.default_rng([self.seed, 1])  # its own stream: the normal data do not depend on it
        kinds = [k for k, c in spec.counts for _ in range(c)]
        rng.shuffle(kinds)
        slots = rng.choice(per_entity * self.entities, size=len(kinds), replace=False)
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
            ts0, ts1 = (float(self._ts(np.array(e), np.array(k))) for k in (k0, k1))
            ep = Episode(f"a{idx + 1:03d}", self.entity_ids[e], kind, feats or (FEATURES[f],), ts0, ts1,
                         None if mag is None else round(mag, 4), direction)
            plans.append(_Plan(ep, e, k0, k1, f, rng=np.random.default_rng([self.seed, 2, idx])))
        return plans

    # -- generation -------------------------------------------------------------------------

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ts, values)`` blocks in time order: ts (N, K) epoch seconds, values (N, K, F), NaN = null."""
        p, n, dt = self._plant, self.entities, self.interval
        rng = np.random.default_rng(self.seed)
        a_ou = math.exp(-dt / _TAU_OU)
        b_tmp = math.exp(-dt / _TAU_TEMP)
        ou = p.ou_std * rng.standard_normal(n)
        w = 2 * np.pi / self.period
        # the lagged load starts at the steady-state response of the lag to the cycle
        att = 1 / math.sqrt(1 + (w * _TAU_TEMP) ** 2)
        t0 = self._ts(np.arange(n), np.zeros(n))
        lag = 1 + p.amp * att * np.sin(w * t0 + p.phase - math.atan(w * _TAU_TEMP))
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
                self._inject(q, x, last, c0, c1)
            last = x[:, -1, :].copy()
            yield t, x

    def _level(self, t: np.ndarray) -> np.ndarray | float:
        """The plant's mean load at times ``t``: 1, or moving to ``1 + shift`` (see shift)."""
        if self.shift == 0.0 or self.shift_at is None:
            return 1.0
        ramp = np.clip((t - (self.start_ts + self.shift_at)) / self.shift_over, 0.0, 1.0)
        return 1.0 + self.shift * ramp

    def _inject(self, q: _Plan, x: np.ndarray, last: np.ndarray, c0: int, c1: int) -> None:
        lo, hi = max(q.k0, c0), min(q.k1, c1 - 1)
        kind, std = q.episode.kind, float(self._plant.noise[q.e, q.f])
        col = x[q.e, lo - c0 : hi + 1 - c0, q.f]
        if kind == "broken_correlation":  # decoupled before the noise (blocks())
            return
        if kind == "stuck" and q.k0 >= c0:  # the last value before the episode: in this block, or the previous one's last
            q.stuck_value = float(np.round(x[q.e, q.k0 - c0 - 1, q.f] if q.k0 > c0 else last[q.e, q.f], 3))
        inject(kind, col, std, q.episode.magnitude or 0.0, q.episode.direction, step=lo - q.k0, steps=q.k1 - q.k0 + 1,
               rng=q.rng, value=q.stuck_value)

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


def _write_rows(path: Path, header: list[str], rows: Iterator[list[Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from e


def write_csv(path: str | Path, feed: SensorFeed) -> Path:
    """The whole feed as one CSV: ``ts, entity, <features>`` in time order, empty cell = null
    (for ``streamvae replay --entity-column entity``)."""
    p = Path(path)

    def rows() -> Iterator[list[Any]]:
        for r in feed.records():
            yield [r["ts"], r["entity"], *("" if v is None else v for v in r["values"].values())]

    _write_rows(p, ["ts", "entity", *FEATURES], rows())
    return p


def write_training_csvs(directory: str | Path, entities: int = 1, seconds: float = 3600.0, interval: float = 1.0,
                        seed: int = 0, plant: int = 0, period: float = 600.0,
                        start_ts: float | None = None) -> list[Path]:
    """Normal readings for ``streamvae train``: one CSV per entity, ``<entity>.csv`` with
    columns ``ts, <features>``; pass each with ``--csv``.

    Use the same ``plant``, ``period`` and per-entity ``interval`` (= entities / rate of the
    live feed) as the feed you will monitor, and a different ``seed``. ``start_ts`` defaults
    to ``seconds`` before the live feed's default start.
    """
    if not isinstance(interval, (int, float)) or not interval > 0:
        raise ConfigError(f"interval must be seconds > 0; got {interval!r}")
    start = DEFAULT_START - seconds if start_ts is None else start_ts
    feed = SensorFeed(entities, entities / interval, seconds, None, seed=seed, plant=plant, period=period, start_ts=start)
    ts, x = feed.arrays()
    x = np.round(x, 3)
    out = []
    for e, name in enumerate(feed.entity_ids):
        path = Path(directory) / f"{name}.csv"
        _write_rows(path, ["ts", *FEATURES], ([t, *row] for t, row in zip(ts[e].tolist(), x[e].tolist())))
        out.append(path)
    return out
