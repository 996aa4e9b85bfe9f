"""The simulated feed as CSV files: the live feed for ``streamvae replay`` and normal
readings for ``streamvae train`` (each file written whole or not at all, by
:func:`streamvae.files.write_atomic`).

Examples
--------
>>> import tempfile
>>> p = write_csv(Path(tempfile.mkdtemp()) / "feed.csv", SensorFeed(entities=2, rate=2.0, duration=3))
>>> p.read_text().splitlines()[0]
'ts,entity,temp,pressure,flow,rpm,vibration,current,voltage,humidity'
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from streamvae.errors import ConfigError
from streamvae.files import write_atomic
from streamvae.offline.feedplant import FEATURES
from streamvae.offline.feedsim import DEFAULT_START, SensorFeed


def _write_rows(path: Path, header: list[str], rows: Iterator[list[Any]]) -> None:
    def write(fh: IO[bytes]) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        w = csv.writer(text)
        w.writerow(header)
        w.writerows(rows)
        text.flush()
        text.detach()  # write_atomic closes the file

    write_atomic(path, write)


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
