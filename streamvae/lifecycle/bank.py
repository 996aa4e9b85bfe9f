"""The anomaly bank: windows of alert episodes that really opened, for the validation gate.

A flagged window counts only once its episode opens (``open_after`` consecutive flags):
a lone false flag never enters the bank. Windows are stratified by episode, so one long
fault does not fill the bank. Episodes opened by a sensor rule (dead or stuck sensor) are
left out: the model does not see those by design. The gate checks that a new model
still separates these windows from normal ones.

Examples
--------
>>> bank = AnomalyBank(max_windows=100, window=4, n_features=2)
>>> _ = bank.add("episode-1", 10.0, np.ones((4, 2)))
>>> len(bank), bank.snapshot()[1]
(1, ['episode-1'])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.pipeline import BatchResult
from streamvae.errors import DataError
from streamvae.lifecycle.reservoir import StratifiedReservoir
from streamvae.lifecycle.state import State, from_json, load_npz, nest, part, save_npz, to_json, windows_or_empty

Sample = tuple[str, str, float, npt.NDArray[np.float32]]  # (entity, episode id, end_ts, values)


class AnomalyBank:
    """Windows of confirmed alert episodes (see the module doc), at most ``max_windows``."""

    def __init__(self, max_windows: int, window: int, n_features: int, seed: int = 0) -> None:
        self.max_windows = max_windows
        self.window = window
        self.n_features = n_features
        self.store_ = StratifiedReservoir(max_windows, window, n_features, seed)
        self._streak: dict[str, list[tuple[float, npt.NDArray[np.float32]]]] = {}
        self._open: dict[str, str] = {}  # entity -> episode id ("": opened by a sensor rule)
        self.episodes_ = 0

    def __len__(self) -> int:
        return len(self.store_)

    def add(self, episode_id: str, end_ts: float, values: npt.ArrayLike) -> bool:
        return self.store_.add(episode_id, end_ts, values)

    def observe(self, result: BatchResult,
                windows: Sequence[npt.ArrayLike] | npt.NDArray[np.float32] | None = None) -> list[Sample]:
        """Keep the flagged windows of episodes that opened; return those offered
        (entity, episode id, end_ts, values). ``windows``: the values of ``result.scored`` in order
        (default ``result.windows``)."""
        if windows is None:
            windows = result.windows if result.windows is not None else np.empty((0, self.window, self.n_features), np.float32)
        if len(windows) != len(result.scored):
            raise DataError(f"{len(windows)} window values for {len(result.scored)} scored windows; pass the batch's windows in order")
        events: dict[tuple[str, float], list[Any]] = {}
        for a in result.alerts:
            events.setdefault((a.entity, a.window_end), []).append(a)
        out: list[Sample] = []
        for s, v in zip(result.scored, windows):
            ent = s.entity
            if s.flagged:
                streak = self._streak.setdefault(ent, [])
                streak.append((s.end_ts, np.asarray(v, np.float32)))
                if len(streak) > 4 * self.window:  # bound: keep the latest part of a long streak
                    streak.pop(0)
            for a in events.get((ent, s.end_ts), ()):
                if a.kind == "open":
                    self._open[ent] = a.episode_id if a.reason == "score" else ""
                    if self._open[ent]:
                        self.episodes_ += 1
                elif a.kind == "close":
                    self._open.pop(ent, None)
            ep = self._open.get(ent)
            if ep:
                for t, w in self._streak.pop(ent, []):
                    self.add(ep, t, w)
                    out.append((ent, ep, t, w))
            elif not s.flagged or ep == "":
                self._streak.pop(ent, None)
        return out

    def snapshot(self) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.float64]]:
        """(windows (N, W, F), episode ids, end_ts (N,)), oldest first."""
        return self.store_.snapshot()

    # -- state ------------------------------------------------------------------------
    def state(self) -> State:
        streak = [(e, t, v) for e, rows in self._streak.items() for t, v in rows]
        return {**nest("store", self.store_.state()),
                "meta": to_json({"open": self._open, "episodes": self.episodes_}),
                "streak_entity": np.asarray([e for e, _, _ in streak], dtype=np.str_),
                "streak_ts": np.asarray([t for _, t, _ in streak], dtype=np.float64),
                "streak_values": windows_or_empty([v for _, _, v in streak], self.window, self.n_features)}

    def restore(self, state: State) -> "AnomalyBank":
        self.store_.restore(part(state, "store"))
        meta = from_json(state["meta"])
        self._open = {str(e): str(ep) for e, ep in meta["open"].items()}
        self.episodes_ = int(meta["episodes"])
        self._streak = {}
        for e, t, v in zip(state["streak_entity"].tolist(), state["streak_ts"].tolist(), state["streak_values"]):
            self._streak.setdefault(str(e), []).append((float(t), v))
        return self

    def save(self, path: str | Path) -> Path:
        return save_npz(path, self.state(), "anomaly")

    def load(self, path: str | Path) -> "AnomalyBank":
        return self.restore(load_npz(path, "anomaly"))
