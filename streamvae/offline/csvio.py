"""Reading readings from CSV files: a timestamp column and feature columns."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from streamvae.errors import DataError


@dataclass(frozen=True)
class Table:
    """A CSV read into columns: ``ts`` (epoch seconds), ``values`` (N, F), extra columns."""

    path: Path
    ts: np.ndarray
    ts_text: list[str]
    feature_names: list[str]
    values: np.ndarray
    extra: dict[str, list[str]]


def parse_ts(text: str) -> float:
    """Epoch seconds from a number or an ISO-8601 / 'YYYY-mm-dd HH:MM:SS' string (UTC if naive)."""
    t = text.strip()
    try:
        v = float(t)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError as e:
        raise DataError(f"cannot read timestamp {text!r}: expected epoch seconds or ISO-8601") from e
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _float(cell: str) -> float:
    c = cell.strip()
    if c == "" or c.lower() in ("nan", "null", "none", "na"):
        return math.nan
    return float(c)


def read_table(
    path: str | Path,
    ts_column: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    keep: Sequence[str] = (),
    delimiter: str | None = None,
) -> Table:
    """Read a CSV of readings.

    ``ts_column``: name of the timestamp column (default: the first column).
    ``features``: feature columns in model order (default: every other column except
    ``exclude`` and ``keep``). ``keep``: extra columns returned as text. The delimiter is
    sniffed (``,`` or ``;``) unless given.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read {p}: not UTF-8 text") from e
    lines = text.splitlines()
    if len(lines) < 2:
        raise DataError(f"{p} has no data rows (need a header line and readings)")
    if delimiter is None:
        delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    ts_col = ts_column or header[0]
    if ts_col not in header:
        raise DataError(f"{p}: no timestamp column {ts_col!r}; columns are {header}")
    for c in keep:
        if c not in header:
            raise DataError(f"{p}: no column {c!r}; columns are {header}")
    if features is None:
        features = [h for h in header if h != ts_col and h not in exclude and h not in keep]
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(f"{p}: no feature column(s) {missing}; columns are {header}")
    if not features:
        raise DataError(f"{p}: no feature columns left to use; columns are {header}")
    ti = header.index(ts_col)
    fi = [header.index(f) for f in features]
    ki = {c: header.index(c) for c in keep}
    body = [r for r in rows[1:] if r]
    ts_text, ts, vals = [], [], []
    extra: dict[str, list[str]] = {c: [] for c in keep}
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{p} line {n}: {len(r)} cells, header has {len(header)}")
        try:
            vals.append([_float(r[i]) for i in fi])
        except ValueError as e:
            raise DataError(f"{p} line {n}: non-numeric feature value ({e})") from e
        ts_text.append(r[ti])
        ts.append(parse_ts(r[ti]))
        for c, i in ki.items():
            extra[c].append(r[i])
    return Table(p, np.asarray(ts), ts_text, list(features), np.asarray(vals, dtype=np.float64), extra)
