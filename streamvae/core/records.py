"""Input records: JSON-decoded dicts -> readings, or a ``RecordError`` with a reason.

A record is ``{"entity": "pump-17", "ts": "2026-11-23T07:00:00.250Z" | 1763881200.25,
"values": {"temp": 71.2, "rpm": null}}`` or carries a block of consecutive readings,
``{"entity": ..., "readings": [{"ts": ..., "values": {...}}, ...]}``. Feature names and
order come from the model; a missing or null value is missing data (NaN), never 0;
unknown features are ignored and counted (in bounded space: ``MAX_UNKNOWN_NAMES``).

Every way a record can be wrong has a machine-readable reason (``REASONS``), so a dead
letter says exactly why. The rules a record must meet:

- ``entity``: 1 to ``max_entity_len`` printable characters (``str.isprintable``: no
  control, format or separator characters other than the space, no lone surrogates), so
  every alert and dead letter that names it can be written out (``bad_entity``).
- a value: a JSON number or null; a number must fit a float32 (magnitude at most
  3.4e38, ``out_of_range``) and be finite (``non_finite``).
- ``ts``: epoch seconds or ISO-8601; with ``now`` given (the daemon's wall clock), at
  most ``max_future_s`` ahead of it (``ts_in_future``): a reading from the future would
  move its entity's clock (and the partition's position) to a time no later reading
  reaches. (A step back of more than a day from its entity's last reading is refused
  by the window assembler, ``ts_too_old``: see streamvae/core/windows.py.)
- a block (``readings``): each item is judged on its own; :meth:`RecordDecoder.decode_items`
  returns the good readings and the bad items with their reasons, so one bad item costs
  one dead letter for the record, never the readings around it.

Examples
--------
>>> dec = RecordDecoder(["temp", "rpm"])
>>> [(r.entity, r.ts, r.values.tolist()) for r in dec.decode({"entity": "p1", "ts": 10, "values": {"temp": 1.5, "rpm": None}})]
[('p1', 10.0, [1.5, nan])]
>>> try:
...     dec.decode({"entity": "p1", "ts": 10, "values": {"temp": "hot"}})
... except RecordError as e:
...     print(e.reason)
bad_value
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Collection, Sequence

import numpy as np

from streamvae.core.pipeline import Reading
from streamvae.errors import RecordError

REASONS = (
    "not_json", "not_utf8", "too_deep", "duplicate_key", "not_object", "too_large", "missing_entity", "bad_entity", "bad_key",
    "entity_key_mismatch", "unknown_entity", "missing_ts", "bad_ts", "ts_in_future", "ts_too_old", "missing_values", "bad_values",
    "bad_value", "non_finite", "out_of_range", "no_known_feature", "bad_readings", "internal_error",
)

MAX_READINGS = 10_000
MAX_UNKNOWN_NAMES = 1_000  # unknown feature names counted by name; the rest only in a total
F32_MAX = float(np.finfo(np.float32).max)
_NAN = math.nan


def parse_ts(v: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (``Z`` or an offset; naive = UTC)."""
    if isinstance(v, bool):
        raise RecordError("bad_ts", f"ts must be epoch seconds or ISO-8601; got {v!r}")
    if isinstance(v, (int, float)):
        try:
            t = float(v)
        except OverflowError:
            raise RecordError("bad_ts", "ts is an integer too large to be a time") from None
        if not math.isfinite(t):
            raise RecordError("bad_ts", f"ts must be finite; got {v!r}")
        return t
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.strip().replace("Z", "+00:00").replace("z", "+00:00"))
            if d.tzinfo is None:
                d = d.replace(tzinfo=timezone.utc)
            return d.timestamp()
        except (ValueError, OverflowError):
            raise RecordError("bad_ts", f"ts {v[:40]!r} is not ISO-8601 or epoch seconds") from None
    raise RecordError("bad_ts", f"ts must be epoch seconds or ISO-8601; got {type(v).__name__}")


class ItemError(RecordError):
    """Some items of a block are bad: ``items`` holds (index, reason, message) for each;
    ``reason`` is the first bad item's."""

    def __init__(self, items: list[tuple[int, RecordError]], total: int) -> None:
        i, first = items[0]
        super().__init__(first.reason, f"{len(items)} of {total} readings refused; the first, item {i}: {first}")
        self.items = items

    def listing(self) -> list[dict[str, Any]]:
        return [{"index": i, "reason": e.reason, "message": str(e)} for i, e in self.items]


class RecordDecoder:
    """Decode records for a model with ``feature_names``.

    ``entities``: if given, only these entity ids are accepted (``unknown_entity``).
    ``max_future_s``: with ``now`` passed to :meth:`decode`, a reading stamped more than
    this ahead of it is refused (``ts_in_future``).
    ``unknown_features_``: count of ignored feature names, by name, for the first
    ``MAX_UNKNOWN_NAMES`` names seen; ``unknown_total_`` counts every ignored value.
    """

    def __init__(self, feature_names: Sequence[str], entities: Collection[str] | None = None, max_entity_len: int = 256,
                 max_future_s: float = 300.0) -> None:
        self.index = {n: i for i, n in enumerate(feature_names)}
        self.n = len(feature_names)
        self.entities = set(entities) if entities else None
        self.max_entity_len = max_entity_len
        self.max_future_s = max_future_s
        self.unknown_features_: dict[str, int] = {}
        self.unknown_total_ = 0

    def decode(self, obj: Any, key: str | None = None, now: float | None = None) -> list[Reading]:
        """The record's readings; raises :class:`RecordError` if any part of it is bad."""
        readings, bad = self.decode_items(obj, key, now)
        if bad is not None:
            raise bad
        return readings

    def decode_items(self, obj: Any, key: str | None = None, now: float | None = None) -> tuple[list[Reading], RecordError | None]:
        """The record's good readings, and why the rest was refused (None: nothing was).

        A record-level fault (no entity, not an object...) refuses all of it; in a block,
        each bad item is listed in an :class:`ItemError` and its good items still count."""
        if not isinstance(obj, dict):
            raise RecordError("not_object", f"a record must be a JSON object; got {type(obj).__name__}")
        entity = obj.get("entity", key)
        if entity is None:
            raise RecordError("missing_entity", "record has no 'entity' (and the message has no key)")
        if not isinstance(entity, str) or not entity or len(entity) > self.max_entity_len:
            raise RecordError("bad_entity", f"entity must be a non-empty string of at most {self.max_entity_len} characters")
        if not entity.isprintable():
            raise RecordError("bad_entity", f"entity {ascii(entity[:60])} holds control or unprintable characters "
                              "(or a lone surrogate); entity names must be printable text")
        if key is not None and key != entity:
            raise RecordError("entity_key_mismatch", f"record entity {ascii(entity)} differs from the message key {ascii(key[:300])}")
        if self.entities is not None and entity not in self.entities:
            raise RecordError("unknown_entity", f"entity {entity!r} is not in the configured entity list")
        horizon = None if now is None else now + self.max_future_s
        if "readings" not in obj:
            return [self._one(entity, obj, horizon)], None
        block = obj["readings"]
        if not isinstance(block, list) or not block or len(block) > MAX_READINGS:
            raise RecordError("bad_readings", f"'readings' must be a non-empty list of at most {MAX_READINGS} readings")
        out: list[Reading] = []
        bad: list[tuple[int, RecordError]] = []
        for i, item in enumerate(block):
            try:
                if not isinstance(item, dict):
                    raise RecordError("bad_readings", "each item of 'readings' must be an object with ts and values")
                out.append(self._one(entity, item, horizon))
            except RecordError as e:
                bad.append((i, e))
        return out, (ItemError(bad, len(block)) if bad else None)

    def _one(self, entity: str, obj: dict[str, Any], horizon: float | None = None) -> Reading:
        if "ts" not in obj:
            raise RecordError("missing_ts", "reading has no 'ts'")
        ts = obj["ts"]
        if ts.__class__ is not float or ts - ts != 0.0:  # fast path: a finite float (x - x is NaN for inf/NaN)
            ts = parse_ts(ts)
        if horizon is not None and ts > horizon:
            raise RecordError("ts_in_future", f"ts {ts:.3f} is {ts - horizon + self.max_future_s:.0f}s ahead of the clock "
                              f"(records.max_future_s = {self.max_future_s:g})")
        vals = obj.get("values")
        if vals is None:
            raise RecordError("missing_values", "reading has no 'values' object")
        if not isinstance(vals, dict):
            raise RecordError("bad_values", f"'values' must be an object of feature -> number; got {type(vals).__name__}")
        # A Python list, then one conversion: per-cell NumPy stores cost more than the checks.
        row = [_NAN] * self.n
        index = self.index
        known = 0
        for name, v in vals.items():
            i = index.get(name)
            if i is None:
                self._unknown(name)
                continue
            known += 1
            if v.__class__ is float and -F32_MAX <= v <= F32_MAX:  # fast path: a finite float a float32 holds
                row[i] = float(v)
                continue
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RecordError("bad_value", f"value of {name!r} must be a number or null; got {type(v).__name__}")
            if isinstance(v, float) and not math.isfinite(v):
                raise RecordError("non_finite", f"value of {name!r} is not finite")
            if not -F32_MAX <= v <= F32_MAX:  # exact for ints of any length
                raise RecordError("out_of_range", f"value of {name!r} is beyond +-{F32_MAX:.4g}, the range of a float32")
            row[i] = float(v)
        if known == 0:
            raise RecordError("no_known_feature", f"no value for any model feature ({', '.join(list(self.index)[:8])}...)")
        return Reading(entity, ts, np.array(row, dtype=np.float32))

    def _unknown(self, name: str) -> None:
        self.unknown_total_ += 1
        counts = self.unknown_features_
        if name in counts:
            counts[name] += 1
        elif len(counts) < MAX_UNKNOWN_NAMES:
            counts[name] = 1
