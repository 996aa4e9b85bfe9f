"""A bounded store of windows shared fairly between keys (entities, or episodes).

:class:`StratifiedReservoir` holds at most ``capacity`` windows (W, F) in one
preallocated float32 array, shared out max-min fairly between keys, with reservoir
sampling inside each key's share: a chatty entity cannot crowd out the rest, and old and
recent windows both stay represented. Memory is ``capacity x W x F x 4`` bytes plus a
few numbers per window, and its :meth:`~StratifiedReservoir.state` is never larger.

Examples
--------
>>> import numpy as np
>>> store = StratifiedReservoir(capacity=100, window=4, n_features=2)
>>> for t in range(300):
...     _ = store.add("pump-1" if t % 10 else "pump-2", float(t), np.zeros((4, 2), np.float32))
>>> counts = store.counts()
>>> counts["pump-2"], counts["pump-1"]      # 30 offered by pump-2, all kept; pump-1 fills the rest
(30, 70)
>>> back = StratifiedReservoir(100, 4, 2)
>>> back.restore(store.state())
>>> _ = [s.add("pump-3", 1e3, np.ones((4, 2))) for s in (store, back)]
>>> store.counts() == back.counts()        # the same state: the same choices from here on
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.errors import ConfigError, DataError
from streamvae.lifecycle.state import State, from_json, to_json


class StratifiedReservoir:
    """``capacity`` windows (W, F) shared max-min fairly between keys, reservoir-sampled per key.

    While there is room every offered window is kept. Once full, a window of key ``k``
    either takes a slot from the key holding the most windows (when ``k`` holds fewer:
    the shares level out, so every key ends with ``min(offered, fair share)``), or,
    when ``k`` already holds the most, replaces one of ``k``'s own windows with
    probability ``held / offered`` (Algorithm R): each key's windows stay a uniform
    sample of everything it ever offered, old and recent alike. Among keys holding the
    most, the one that got there first gives up a slot, so a run is reproducible.
    """

    def __init__(self, capacity: int, window: int, n_features: int, seed: int = 0) -> None:
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ConfigError(f"retrain.max_windows must be an int >= 1; got {capacity!r}")
        self.capacity = capacity
        self.window = window
        self.n_features = n_features
        self.seed = seed
        self._values = np.empty((capacity, window, n_features), np.float32)
        self.clear()

    def clear(self) -> None:
        """Forget every window and count (the array is reused)."""
        self._rng = np.random.default_rng(self.seed)
        self._end_ts = np.full(self.capacity, np.nan)
        self._key_of: list[str | None] = [None] * self.capacity
        self._free = list(range(self.capacity - 1, -1, -1))
        self._slots: dict[str, list[int]] = {}
        self._offered: dict[str, int] = {}
        # keys by how many windows they hold (insertion-ordered), and the largest such count
        self._by_size: dict[int, dict[str, None]] = {}
        self._max = 0
        self.evicted_ = 0

    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def _resize(self, key: str, old: int, new: int) -> None:
        if old > 0:
            s = self._by_size[old]
            del s[key]
            if not s:
                del self._by_size[old]
        if new > 0:
            self._by_size.setdefault(new, {})[key] = None
        if new > self._max:
            self._max = new
        while self._max > 0 and self._max not in self._by_size:
            self._max -= 1

    def _put(self, slot: int, key: str, end_ts: float, values: npt.NDArray[np.float32]) -> None:
        self._values[slot] = values
        self._end_ts[slot] = end_ts
        self._key_of[slot] = key

    def _take(self, key: str, i: int) -> int:
        """Remove the ``i``-th window of ``key``; its slot."""
        slots = self._slots[key]
        n = len(slots)
        slot = slots[i]
        slots[i] = slots[-1]
        slots.pop()
        self._resize(key, n, n - 1)
        if not slots:
            del self._slots[key]
        self._key_of[slot] = None
        return slot

    def add(self, key: str, end_ts: float, values: npt.ArrayLike) -> bool:
        """Offer one window; True if it was stored."""
        v = np.asarray(values, dtype=np.float32)
        if v.shape != (self.window, self.n_features):
            raise DataError(f"a buffered window must have shape ({self.window}, {self.n_features}); got {v.shape}")
        n_off = self._offered.get(key, 0) + 1
        self._offered[key] = n_off
        mine = self._slots.get(key)
        held = len(mine) if mine is not None else 0
        if self._free:
            slot = self._free.pop()
        elif held < self._max:  # take a slot from the key that holds the most
            victim = next(iter(self._by_size[self._max]))
            slot = self._take(victim, int(self._rng.integers(self._max)))
            self.evicted_ += 1
        else:  # already holds the most: reservoir sampling within its own share
            j = int(self._rng.integers(n_off))
            if j >= held:
                return False
            assert mine is not None
            self._put(mine[j], key, end_ts, v)
            self.evicted_ += 1
            return True
        self._put(slot, key, end_ts, v)
        self._slots.setdefault(key, []).append(slot)
        self._resize(key, held, held + 1)
        return True

    def counts(self) -> dict[str, int]:
        """Windows held per key."""
        return {k: len(s) for k, s in self._slots.items()}

    def offered(self) -> dict[str, int]:
        """Windows ever offered per key."""
        return dict(self._offered)

    def snapshot(self) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.float64]]:
        """(windows (N, W, F) float32, keys, end_ts (N,)), oldest first (a copy)."""
        used = np.array([s for s in range(self.capacity) if self._key_of[s] is not None], dtype=np.int64)
        if len(used) == 0:
            return np.empty((0, self.window, self.n_features), np.float32), [], np.empty(0)
        order = used[np.argsort(self._end_ts[used], kind="stable")]
        keys = [self._key_of[s] for s in order]
        return self._values[order].copy(), [k for k in keys if k is not None], self._end_ts[order].copy()

    # -- state ------------------------------------------------------------------------
    def state(self) -> State:
        """Everything, slot by slot, so that :meth:`restore` continues exactly (see the module doc)."""
        slots = [s for k in self._slots for s in self._slots[k]]
        idx = np.asarray(slots, dtype=np.int64)
        meta = {"geometry": [self.capacity, self.window, self.n_features], "free": self._free,
                "offered": self._offered, "buckets": [[n, list(keys)] for n, keys in self._by_size.items()],
                "evicted": self.evicted_, "rng": self._rng.bit_generator.state}
        return {"values": self._values[idx].copy(), "slot": idx, "end_ts": self._end_ts[idx].copy(),
                "key": np.asarray([self._key_of[s] for s in slots], dtype=np.str_), "meta": to_json(meta)}

    def restore(self, state: State) -> None:
        """Continue from :meth:`state`. With another capacity, keep a fair subsample instead
        (the windows offered again oldest first)."""
        w = state["values"]
        if w.ndim != 3 or w.shape[1:] != (self.window, self.n_features):
            raise DataError(f"saved windows have shape {w.shape}; this buffer holds (n, {self.window}, {self.n_features})")
        meta: dict[str, Any] = from_json(state["meta"])
        keys = [str(k) for k in state["key"].tolist()]
        ts = state["end_ts"].astype(np.float64)
        self.clear()
        if int(meta["geometry"][0]) != self.capacity:
            for i in np.argsort(ts, kind="stable"):
                self.add(keys[i], float(ts[i]), w[i])
            for key, n in meta["offered"].items():  # the reservoir's odds depend on how many were offered
                self._offered[key] = max(int(n), self._offered.get(key, 0))
            return
        for i, slot in enumerate(state["slot"].tolist()):
            self._put(int(slot), keys[i], float(ts[i]), w[i])
            self._slots.setdefault(keys[i], []).append(int(slot))
        self._free = [int(s) for s in meta["free"]]
        self._offered = {str(k): int(n) for k, n in meta["offered"].items()}
        self._by_size = {int(n): dict.fromkeys(ks) for n, ks in meta["buckets"]}
        self._max = max(self._by_size, default=0)
        self.evicted_ = int(meta["evicted"])
        self._rng.bit_generator.state = meta["rng"]
