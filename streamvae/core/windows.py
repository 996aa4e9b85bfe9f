"""Sliding windows of W readings x F features, per entity.

A reading is one timestamp and a vector of F floats in the model's feature order; a
missing value is NaN and stays NaN (the window's ``mask`` says which cells were
observed). A gap in time longer than ``max_gap`` starts a new window sequence, so a
window never spans an outage.

Two forms share one definition of a window:

- :func:`sliding_windows` cuts a whole recorded series at once (training, offline
  scoring, evaluation);
- :class:`WindowAssembler` is fed one reading at a time per entity (replay, daemon) and
  returns each window the moment it completes. For the same readings both give the same
  windows.

Examples
--------
>>> import numpy as np
>>> x = np.arange(12, dtype=float).reshape(6, 2)
>>> w = sliding_windows(x, size=3, stride=2)
>>> w.values.shape, w.end.tolist()
((2, 3, 2), [2, 4])
>>> asm = WindowAssembler(size=3, stride=2, n_features=2)
>>> [win.end_index for t, row in enumerate(x) for win in asm.push("pump-1", float(t), row)]
[2, 4]
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamvae.errors import ConfigError, RecordError

FloatArray = npt.NDArray[np.float32]
log = logging.getLogger(__name__)
MAX_STEP_BACK = 86_400.0  # seconds: the largest clock slip taken as one (a time-zone slip is < 1 day)


def _check_geometry(size: int, stride: int, max_gap: float | None) -> None:
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"window.size must be an int >= 1; got {size!r}")
    if not isinstance(stride, int) or not 1 <= stride <= size:
        raise ConfigError(f"window.stride must be an int in [1, window.size={size}]; got {stride!r}")
    if max_gap is not None and not (max_gap > 0 and math.isfinite(max_gap)):
        raise ConfigError(f"window.max_gap must be a positive number of seconds or unset; got {max_gap!r}")


def typical_interval(*timestamps: npt.ArrayLike) -> float | None:
    """The median step between consecutive readings over one or more series (each one
    entity's timestamps in arrival order); None when no step is positive.

    >>> typical_interval([0.0, 300.0, 600.0, 600.0, 1200.0])
    300.0
    """
    steps = [np.diff(np.asarray(t, dtype=np.float64)) for t in timestamps]
    d = np.concatenate(steps) if steps else np.empty(0)
    d = d[d > 0]
    return float(np.median(d)) if len(d) else None


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Windows cut from one series.

    values : (M, W, F) float32, NaN where a reading was missing
    end : (M,) index in the series of each window's last reading
    """

    values: FloatArray
    end: npt.NDArray[np.int64]

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True where a value was observed."""
        return ~np.isnan(self.values)

    def __len__(self) -> int:
        return int(self.values.shape[0])


def sliding_windows(
    values: npt.ArrayLike,
    size: int,
    stride: int = 1,
    timestamps: npt.ArrayLike | None = None,
    max_gap: float | None = None,
) -> WindowBatch:
    """Cut an ordered series of readings (N, F) into windows (M, size, F).

    A new window sequence starts at the first reading and after every gap in
    ``timestamps`` longer than ``max_gap`` seconds; within a sequence a window ends at
    reading ``size - 1`` and every ``stride`` readings after that.
    """
    _check_geometry(size, stride, max_gap)
    x = np.asarray(values, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"values must be a 2-d array (readings x features); got shape {x.shape}")
    n, f = x.shape
    starts = [0]
    if timestamps is not None and max_gap is not None and n > 1:
        ts = np.asarray(timestamps, dtype=np.float64)
        starts += (np.nonzero(np.diff(ts) > max_gap)[0] + 1).tolist()
    bounds = starts + [n]
    ends: list[int] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        ends.extend(range(a + size - 1, b, stride))
    end = np.asarray(ends, dtype=np.int64)
    if len(end) == 0:
        return WindowBatch(np.empty((0, size, f), np.float32), end)
    idx = end[:, None] - size + 1 + np.arange(size)[None, :]
    return WindowBatch(x[idx], end)


@dataclass(slots=True, eq=False)
class Window:
    """One completed window of one entity (not frozen: see core/pipeline.py's Reading).

    ``values`` is (W, F) float32 with NaN for missing readings; ``end_index`` counts
    readings of this entity since the assembler first saw it (0-based).
    """

    entity: str
    start_ts: float
    end_ts: float
    end_index: int
    values: FloatArray

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True where a value was observed."""
        return ~np.isnan(self.values)


class _Ring:
    """The last W readings of one entity and their timestamps."""

    __slots__ = ("values", "ts", "filled", "seen", "since_emit", "last_ts")

    def __init__(self, size: int, n_features: int) -> None:
        self.values = np.full((2 * size, n_features), np.nan, dtype=np.float32)
        self.ts = [0.0] * (2 * size)  # a list: per-reading stores and reads of a NumPy array cost more
        self.filled = 0  # readings in the current sequence
        self.seen = 0  # readings ever pushed for this entity
        self.since_emit = 0
        self.last_ts = -math.inf


class WindowAssembler:
    """Turn per-entity streams of readings into sliding windows as they complete.

    Parameters
    ----------
    size, stride : window length W and step S, in readings.
    n_features : F, the model's feature count.
    max_gap : seconds; a longer silence starts a new sequence (None: never).
    max_lateness : seconds a timestamp may go backwards and still be appended in arrival
        order. A reading further back means the entity's clock stepped back (a reset, a
        time-zone or DST slip): it starts a new window sequence from that time on, as a
        gap does, instead of being refused (``clock_resets_`` counts them, logged once
        per entity). A step back of more than ``MAX_STEP_BACK`` (a day) is no slip: a
        clock that was never set (epoch 0 plus uptime) or seconds in another unit. That
        reading is refused (``RecordError`` ``ts_too_old``) and the entity's windows go
        on, so one such record cannot cut the sequence of every open window.

    A reading stamped exactly like the entity's previous one is taken as the next
    reading, in arrival order (``repeated_ts_`` counts them): sensors that stamp at a
    coarse resolution, or a clock stuck for a while, still deliver distinct readings.
    max_entities : bound on live entities; the least recently seen is evicted first
        (counted in ``evicted_``).
    """

    def __init__(
        self,
        size: int,
        stride: int,
        n_features: int,
        max_gap: float | None = None,
        max_lateness: float = 0.0,
        max_entities: int = 100_000,
    ) -> None:
        _check_geometry(size, stride, max_gap)
        self.size = size
        self.stride = stride
        self.n_features = n_features
        self.max_gap = max_gap
        self.max_lateness = max_lateness
        self.max_entities = max_entities
        self._rings: OrderedDict[str, _Ring] = OrderedDict()
        self.evicted_ = 0
        self.clock_resets_ = 0
        self.repeated_ts_ = 0
        self._reset_logged: set[str] = set()

    def __len__(self) -> int:
        return len(self._rings)

    def push(self, entity: str, ts: float, values: npt.ArrayLike) -> list[Window]:
        """Add one reading; return the window it completes (zero or one)."""
        row = np.asarray(values, dtype=np.float32)
        if row.shape != (self.n_features,):
            raise RecordError("wrong_shape", f"reading of {entity} has shape {row.shape}; expected ({self.n_features},)")
        rings = self._rings
        ring = rings.get(entity)
        if ring is None:
            ring = rings[entity] = _Ring(self.size, self.n_features)
            if len(rings) > self.max_entities:
                rings.popitem(last=False)
                self.evicted_ += 1
        else:
            rings.move_to_end(entity)
        last = ring.last_ts
        if ts < last - self.max_lateness:
            if last - ts > MAX_STEP_BACK:
                raise RecordError("ts_too_old", f"ts {ts:.3f} of {ascii(entity[:60])} is {last - ts:.0f}s before its "
                                  f"last reading (more than {MAX_STEP_BACK:g}s back: a clock never set, or seconds "
                                  "in another unit)")
            self._clock_reset(entity, ts, last)
            ring.filled = 0
            ring.since_emit = 0
            ring.last_ts = last = ts
        elif ts == last:
            self.repeated_ts_ += 1
        if self.max_gap is not None and ring.filled and ts - last > self.max_gap:
            ring.filled = 0
            ring.since_emit = 0
        w = self.size
        # Write each reading twice (at i and i + W) so the last W readings are always one
        # contiguous slice of the 2W buffer: no np.roll, no copy until a window is emitted.
        i = ring.seen % w
        ring.values[i::w] = row  # rows i and i + W, in one assignment
        ring.ts[i] = ring.ts[i + w] = ts
        ring.seen += 1
        ring.filled += 1
        if ts > last:
            ring.last_ts = ts
        if ring.filled < w:
            return []
        if ring.filled > w:
            ring.since_emit += 1
            if ring.since_emit < self.stride:
                return []
        ring.since_emit = 0
        lo = i + 1
        return [Window(entity, float(ring.ts[lo]), float(ts), ring.seen - 1, ring.values[lo : lo + w].copy())]

    def _clock_reset(self, entity: str, ts: float, last: float) -> None:
        self.clock_resets_ += 1
        if entity not in self._reset_logged and len(self._reset_logged) < 10_000:
            self._reset_logged.add(entity)
            log.warning("the clock of %s stepped back %.3fs (ts %s after %s; allowed lateness %ss): "
                        "a new window sequence starts (logged once per entity)", entity, last - ts, ts, last, self.max_lateness)

    def forget(self, entity: str) -> None:
        """Drop one entity's open window (e.g. its partition was revoked)."""
        self._rings.pop(entity, None)
