"""Buffers rebuilt from sample records: what the retrain job learns when
``retrain.buffer = "kafka"``.

Each daemon publishes the windows its buffers accepted on ``topics.samples``
(:mod:`streamvae.kafka.samples` moves them as JSON; this module sees decoded dicts only).
A normal sample carries the publishing buffer's
:class:`~streamvae.lifecycle.learn.FleetHistory` as ``fleet``, so the rebuilt buffer
chooses its training windows exactly as that daemon's own buffer would (while the buffer
never had to evict a window; with several daemons, the history of the last record read
wins).

Examples
--------
>>> stack([[[1.0, None], [2.0, 3.0]]], window=2, n_features=2).tolist()
[[[1.0, nan], [2.0, 3.0]]]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.lifecycle.bank import AnomalyBank
from streamvae.lifecycle.learn import FleetHistory
from streamvae.lifecycle.normal import NormalBuffer


def stack(rows: Iterable[Any], window: int, n_features: int) -> npt.NDArray[np.float32]:
    """Windows from nested lists (None = missing) into (N, W, F) float32 with NaN."""
    out = [np.asarray([[np.nan if v is None else v for v in r] for r in w], dtype=np.float32) for w in rows]
    if not out:
        return np.empty((0, window, n_features), np.float32)
    x = np.stack(out)
    if x.shape[1:] != (window, n_features):
        raise DataError(f"windows have shape {x.shape[1:]}; expected ({window}, {n_features})")
    return x


def fill_from_samples(buffer: NormalBuffer, bank: AnomalyBank, records: Sequence[Mapping[str, Any]]) -> None:
    """Add sample records (already sampled and margin-checked by the daemons that
    published them) to ``buffer`` and ``bank``, oldest first; the buffer takes the fleet
    history of the last normal record."""
    fleet = None
    for r in records:
        if r["kind"] == "normal" and isinstance(r.get("fleet"), Mapping):
            fleet = r["fleet"]
    w, nf = buffer.window, buffer.n_features
    for r in sorted(records, key=lambda r: float(r["end_ts"])):
        v = stack([r["window"]], w, nf)[0]
        if r["kind"] == "normal":
            buffer.add(str(r["entity"]), float(r["end_ts"]), v)
        else:
            bank.add(str(r.get("episode_id") or r["entity"]), float(r["end_ts"]), v)
    if fleet is not None:
        buffer.choice_ = FleetHistory.from_dict(fleet)
