"""Lifecycle state as NumPy arrays: what a checkpoint ``.npz`` holds, and how it is packed.

Every stateful lifecycle object offers ``state() -> dict[str, numpy.ndarray]`` and
``restore(state)``. The arrays are plain numbers and strings, so a checkpoint loads with
``numpy.load(path, allow_pickle=False)``: nothing in it can run code. Small structured
parts (counters, per-entity dicts, a random generator's state) travel as JSON in a 0-d
string array; the windows themselves stay float32 arrays.

Examples
--------
>>> s = nest("fleet", {"meta": to_json({"on": True, "starts": [1.0]})})
>>> sorted(s), from_json(part(s, "fleet")["meta"])
(['fleet.meta'], {'on': True, 'starts': [1.0]})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.files import write_atomic

State = dict[str, npt.NDArray[Any]]
FORMAT = "streamvae-buffer/2"  # the exported buffer files (normal.npz, anomalies.npz)


def to_json(obj: Any) -> npt.NDArray[np.str_]:
    """``obj`` as JSON in a 0-d string array (NaN and infinities allowed)."""
    return np.asarray(json.dumps(obj))


def from_json(a: npt.NDArray[Any]) -> Any:
    """The object :func:`to_json` packed."""
    return json.loads(str(np.asarray(a)[()]))


def nest(prefix: str, state: Mapping[str, npt.NDArray[Any]]) -> State:
    """Every key of ``state`` under ``prefix.``."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def part(state: Mapping[str, npt.NDArray[Any]], prefix: str) -> State:
    """The keys :func:`nest` put under ``prefix.``, without it."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in state.items() if k.startswith(head)}


def windows_or_empty(values: list[npt.NDArray[np.float32]], window: int, n_features: int) -> npt.NDArray[np.float32]:
    """``values`` stacked as (N, W, F) float32; (0, W, F) when there are none."""
    if not values:
        return np.empty((0, window, n_features), np.float32)
    return np.stack(values).astype(np.float32, copy=False)


def save_npz(path: str | Path, state: Mapping[str, npt.NDArray[Any]], kind: str) -> Path:
    """Write ``state`` to one ``.npz`` tagged with :data:`FORMAT` and ``kind`` (atomic)."""
    arrays = dict(state, format=np.asarray(FORMAT), kind=np.asarray(kind))
    return write_atomic(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy stubs: allow_pickle


def load_npz(path: str | Path, kind: str) -> State:
    """Read a file :func:`save_npz` wrote; DataError if it is not one of ``kind``."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the {kind} file {p}: {e}") from e
    if str(d.get("format", "")) != FORMAT or str(d.get("kind", "")) != kind:
        raise DataError(f"{p} is not a streamvae {kind} file (format {FORMAT}); export it again from a daemon "
                        "of this version")
    return d
