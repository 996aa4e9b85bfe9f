"""The samples topic: normal windows (and windows of confirmed episodes) for the retrain job.

With more than one daemon in a group, each daemon sees only its partitions' entities; the
retrain job must see them all, so each daemon publishes the windows its normal buffer
accepted (after sampling and the episode margins) and the windows of confirmed episodes,
and one job reads everything the topic retains (``retrain.samples_retention_ms``).

One record, JSON (key = entity id)::

    {"kind": "normal" | "anomaly", "entity": "pump-17", "end_ts": 1763881200.25,
     "model_version": "2026-11-23T07-00-00Z-3f2a",
     "window": [[71.2, 3.1, null], ...],          # W rows of F values, null = missing
     "episode_id": "...",                         # anomalies only, optional
     "fleet": {"starts": [...], "ends": [...], "rate": 8.0}}   # normal only, optional

``fleet`` is what the choice of training windows needs to know about fleet-wide shifts
(``streamvae.lifecycle.learn.FleetHistory``, as the publishing daemon's buffer knew it
when the window entered), so a buffer rebuilt from the topic chooses as that daemon's
own would. This module moves dicts and bytes only (no NumPy): the caller turns
``window`` into an array.

Examples
--------
>>> rec = decode_sample(encode_sample("normal", "pump-1", 10.0, "v1", [[1.0, float("nan")], [2.0, 3.0]],
...                                   fleet={"starts": [5.0], "ends": [None], "rate": 2.0}))
>>> rec["window"], rec["kind"], rec["fleet"]["starts"]
([[1.0, None], [2.0, 3.0]], 'normal', [5.0])
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import orjson
from kafka.errors import KafkaError

from streamvae.config import KafkaConfig
from streamvae.errors import DataError
from streamvae.kafka.clients import create_topic
from streamvae.kafka.tools import TopicReader

log = logging.getLogger(__name__)

KINDS = ("normal", "anomaly")


def encode_sample(kind: str, entity: str, end_ts: float, model_version: str, window: Any,
                  episode_id: str | None = None, fleet: Mapping[str, Any] | None = None) -> bytes:
    """One sample record as JSON bytes. ``window``: W rows of F numbers (NaN -> null);
    anything with ``tolist()`` (a NumPy array) or nested sequences. ``fleet``: the
    fleet-shift history (JSON-ready), for normal samples."""
    if kind not in KINDS:
        raise DataError(f"sample kind must be one of {', '.join(KINDS)}; got {kind!r}")
    rows = window.tolist() if hasattr(window, "tolist") else window
    clean = [[None if (v is None or not math.isfinite(v)) else float(v) for v in row] for row in rows]
    rec: dict[str, Any] = {"kind": kind, "entity": entity, "end_ts": float(end_ts), "model_version": model_version,
                           "window": clean}
    if episode_id is not None:
        rec["episode_id"] = episode_id
    if fleet is not None:
        rec["fleet"] = dict(fleet)
    return orjson.dumps(rec)


def decode_sample(value: bytes | None) -> dict[str, Any]:
    """Parse and check one sample record; DataError (naming what is wrong) if it is not one."""
    try:
        rec = orjson.loads(value or b"")
    except orjson.JSONDecodeError as e:
        raise DataError(f"sample record is not JSON: {e}") from None
    if not isinstance(rec, dict):
        raise DataError("sample record must be a JSON object")
    if rec.get("kind") not in KINDS:
        raise DataError(f"sample record kind must be one of {', '.join(KINDS)}; got {rec.get('kind')!r}")
    if not isinstance(rec.get("entity"), str) or not rec["entity"]:
        raise DataError("sample record needs an entity")
    if not isinstance(rec.get("end_ts"), (int, float)):
        raise DataError("sample record needs a numeric end_ts")
    w = rec.get("window")
    if not (isinstance(w, list) and w and all(isinstance(r, list) and len(r) == len(w[0]) for r in w)):
        raise DataError("sample record window must be a non-empty list of equal-length rows")
    if "fleet" in rec and not isinstance(rec["fleet"], dict):
        raise DataError("sample record fleet must be a JSON object")
    return rec


def ensure_samples_topic(k: KafkaConfig, topic: str, retention_ms: int, partitions: int = 1, timeout_s: float = 10.0) -> None:
    """Create the samples topic with its retention limit if it does not exist (a topic that
    exists keeps its settings; a broker that refuses is logged, not fatal)."""
    try:
        if create_topic(k, topic, partitions, {"retention.ms": str(retention_ms)}, timeout_s):
            log.info("created samples topic %s (retention %d ms)", topic, retention_ms)
    except KafkaError as e:
        raise DataError(f"cannot reach a Kafka broker at {k.bootstrap_servers} to create topic {topic!r}: {e!r}") from e


def read_samples(k: KafkaConfig, topic: str, timeout_s: float = 60.0, connect_timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every sample record the topic retains, in partition order (no group, no commits).

    Records that are not valid samples are skipped and counted in one warning."""
    reader = TopicReader(k, topic, from_beginning=True, connect_timeout_s=connect_timeout_s)
    out: list[dict[str, Any]] = []
    bad = 0
    try:
        if reader.refresh() == 0:
            log.warning("samples topic %s has no partitions (nothing published yet?)", topic)
            return out
        ends = reader.end_offsets()
        deadline = time.monotonic() + timeout_s
        while not reader.caught_up(ends):
            if time.monotonic() > deadline:
                raise DataError(f"reading samples topic {topic!r} did not reach its end within {timeout_s:g} s")
            for m in reader.poll(1.0):
                try:
                    out.append(decode_sample(m.value))
                except DataError:
                    bad += 1
    finally:
        reader.close()
    if bad:
        log.warning("skipped %d records of %s that are not sample records", bad, topic)
    return out


def split_kinds(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(normal records, anomaly records)."""
    return [r for r in records if r["kind"] == "normal"], [r for r in records if r["kind"] == "anomaly"]
