"""Input records: JSON-decoded dicts -> readings, or a ``RecordError`` with a reason.

A record is ``{"entity": "pump-17", "ts": "2026-11-23T07:00:00.250Z" | 1763881200.25,
"values": {"temp": 71.2, "rpm": null}}`` or carries a block of consecutive readings,
``{"entity": ..., "readings": [{"ts": ..., "values": {...}}, ...]}``. Feature names and
order come from the model; a missing or null value is missing data (NaN), never 0;
unknown features are ignored and counted.

Every way a record can be wrong has a machine-readable reason (``REASONS``), so a dead
letter says exactly why.

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
    "not_json", "not_object", "too_large", "missing_entity", "bad_entity", "entity_key_mismatch", "unknown_entity",
    "missing_ts", "bad_ts", "missing_values", "bad_values", "bad_value", "non_finite", "no_known_feature",
    "bad_readings",
)

MAX_READINGS = 10_000
_NAN = math.nan


def parse_ts(v: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (``Z`` or an offset; naive = UTC)."""
    if isinstance(v, bool):
        raise RecordError("bad_ts", f"ts must be epoch seconds or ISO-8601; got {v!r}")
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise RecordError("bad_ts", f"ts must be finite; got {v!r}")
        return float(v)
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise RecordError("bad_ts", f"ts {v[:40]!r} is not ISO-8601 or epoch seconds") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return d.timestamp()
    raise RecordError("bad_ts", f"ts must be epoch seconds or ISO-8601; got {type(v).__name__}")


class RecordDecoder:
    """Decode records for a model with ``feature_names``.

    ``entities``: if given, only these entity ids are accepted (``unknown_entity``).
    ``unknown_features_``: count of ignored feature names, by name.
    """

    def __init__(self, feature_names: Sequence[str], entities: Collection[str] | None = None, max_entity_len: int = 256) -> None:
        self.index = {n: i for i, n in enumerate(feature_names)}
        self.n = len(feature_names)
        self.entities = set(entities) if entities else None
        self.max_entity_len = max_entity_len
        self.unknown_features_: dict[str, int] = {}

    def decode(self, obj: Any, key: str | None = None) -> list[Reading]:
        if not isinstance(obj, dict):
            raise RecordError("not_object", f"a record must be a JSON object; got {type(obj).__name__}")
        entity = obj.get("entity", key)
        if entity is None:
            raise RecordError("missing_entity", "record has no 'entity' (and the message has no key)")
        if not isinstance(entity, str) or not entity or len(entity) > self.max_entity_len:
            raise RecordError("bad_entity", f"entity must be a non-empty string of at most {self.max_entity_len} characters")
        if key is not None and key != entity:
            raise RecordError("entity_key_mismatch", f"record entity {entity!r} differs from the message key {key!r}")
        if self.entities is not None and entity not in self.entities:
            raise RecordError("unknown_entity", f"entity {entity!r} is not in the configured entity list")
        if "readings" in obj:
            block = obj["readings"]
            if not isinstance(block, list) or not block or len(block) > MAX_READINGS:
                raise RecordError("bad_readings", f"'readings' must be a non-empty list of at most {MAX_READINGS} readings")
            out = []
            for item in block:
                if not isinstance(item, dict):
                    raise RecordError("bad_readings", "each item of 'readings' must be an object with ts and values")
                out.append(self._one(entity, item))
            return out
        return [self._one(entity, obj)]

    def _one(self, entity: str, obj: dict[str, Any]) -> Reading:
        if "ts" not in obj:
            raise RecordError("missing_ts", "reading has no 'ts'")
        ts = obj["ts"]
        if ts.__class__ is not float or ts - ts != 0.0:  # fast path: a finite float (x - x is NaN for inf/NaN)
            ts = parse_ts(ts)
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
                self.unknown_features_[name] = self.unknown_features_.get(name, 0) + 1
                continue
            known += 1
            if v.__class__ is float and v - v == 0.0:  # fast path: a finite float
                row[i] = v
                continue
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RecordError("bad_value", f"value of {name!r} must be a number or null; got {type(v).__name__}")
            if not math.isfinite(v):
                raise RecordError("non_finite", f"value of {name!r} is not finite")
            row[i] = v
        if known == 0:
            raise RecordError("no_known_feature", f"no value for any model feature ({', '.join(list(self.index)[:8])}...)")
        return Reading(entity, ts, np.array(row, dtype=np.float32))
