"""Accounting after a proof scenario: every record, window and injected anomaly, from the topics.

What came out is read from the beginning to the end of each topic by a read_committed
consumer (what a downstream consumer of an exactly-once daemon sees; in the default mode
it sees everything acknowledged). Then, against what the feeder sent
(:class:`~streamvae.testing.proof.plant.Sent`):

- a window is *lost* if the scores topic never names it (entity, window end);
- a good reading is *lost* if no scored window holds it; a refused record is lost if the
  dead-letter topic does not hold its (partition, offset);
- an injected anomaly is *alerted* if an ``open`` alert of its entity ends inside
  ``[first, first + length + W + 30 s]`` (event time; see streamvae/testing/truth.py), or
  if an episode of its entity that opened earlier was still open when the first window
  holding an anomalous reading ended (the detector, like any, has false alarms: one that
  opens seconds before the fault goes on to cover it, and the operator is alerted);
  ``notes["covered_by_earlier_episode"]`` counts those; else it is *missed*;
- a *duplicate alert* is an alert id seen more than once; each is compared with its first
  copy field by field (``detected_at``, the wall-clock time it was computed, aside).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streamvae.testing.proof import Outcome
from streamvae.testing.proof.plant import T0, WINDOW, Sent
from streamvae.testing.truth import MATCH_MARGIN_S


@dataclass
class Record:
    value: dict[str, Any]
    raw: bytes
    partition: int
    offset: int
    timestamp_ms: int


def read_all(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[Record]:
    """Every record of ``topic`` up to its end (the last stable offset), read_committed."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed",
                      max_partition_fetch_bytes=8 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500, max_records=50_000).items():
                for r in recs:
                    if r.value is not None:
                        out.append(Record(json.loads(r.value), r.value, r.partition, r.offset, r.timestamp))
            todo = {tp for tp in todo if c.position(tp) < ends[tp]}
        if todo:
            raise TimeoutError(f"{topic}: not read to its end in {timeout_s:g} s ({sorted(str(t) for t in todo)})")
        return out
    finally:
        c.close()


@dataclass
class Topics:
    """The three output topics of one run, read back."""

    scores: list[Record] = field(default_factory=list)
    alerts: list[Record] = field(default_factory=list)
    dead: list[Record] = field(default_factory=list)

    @classmethod
    def read(cls, bootstrap: str, scores: str, alerts: str, dead: str) -> Topics:
        return cls(read_all(bootstrap, scores), read_all(bootstrap, alerts), read_all(bootstrap, dead))


def account(out: Outcome, sent: Sent, entities: list[str], got: Topics) -> Outcome:
    """Fill ``out``'s counts from what was sent and what came out (see the module doc)."""
    steps = sent.steps
    scored = Counter((r.value["entity"], r.value["window_end"]) for r in got.scores)
    ends = {(e, float(T0 + i)) for e in entities for i in range(WINDOW - 1, steps)}
    out.windows = len(ends)
    out.lost_windows = len(ends - set(scored))
    covered = {e: set() for e in entities}  # type: dict[str, set[int]]
    for (e, end) in scored:
        if e in covered:
            last = int(end) - T0
            covered[e].update(range(last - WINDOW + 1, last + 1))
    lost_good = sum(steps - len(covered[e] & set(range(steps))) for e in entities)
    dead_at = {(r.value.get("partition"), r.value.get("offset")) for r in got.dead}
    lost_bad = sum(1 for pos in sent.bad if pos not in dead_at)
    out.records = steps * len(entities) + len(sent.bad)
    out.bad_records = len(sent.bad)
    out.lost_records = lost_good + lost_bad
    alerts = [r.value for r in got.alerts]
    due = [a for a in sent.anomalies if a.first + a.length + WINDOW <= steps]
    out.anomalies = len(due)
    episodes = _episodes(alerts)
    missed, earlier = [], 0
    for an in due:
        lo, hi = T0 + an.first, T0 + an.first + an.length + WINDOW + MATCH_MARGIN_S
        spans = episodes.get(an.entity, [])
        if any(lo <= start <= hi for start, _ in spans):
            continue
        if any(start < lo <= end for start, end in spans):
            earlier += 1
            continue
        missed.append(an)
    out.notes["covered_by_earlier_episode"] = earlier
    out.missed_anomalies = len(missed)
    out.notes["missed"] = [f"{a.entity}@{a.first} feature {a.feature}" for a in missed]
    first: dict[str, dict[str, Any]] = {}
    dups = differ = 0
    fields: set[str] = set()  # what the differing repeats differ in, to say why
    for a in alerts:
        aid = a.get("alert_id")
        if aid in first:
            dups += 1
            was, now = _strip(first[aid]), _strip(a)
            differ += was != now
            diff = {k: [was.get(k), now.get(k)] for k in sorted(was.keys() | now.keys()) if was.get(k) != now.get(k)}
            fields.update(diff)
            if diff and "duplicate_alert_example" not in out.notes:  # the first, whole, to say why
                out.notes["duplicate_alert_example"] = {"alert_id": aid, "kind": a.get("kind"), "differs": diff}
        else:
            first[str(aid)] = a
    out.duplicate_alerts = dups
    out.notes.update(windows_rescored=sum(n - 1 for n in scored.values()), alerts=len(alerts),
                     duplicate_alerts_differing=differ, duplicate_alert_fields=sorted(fields), dead_letters=len(got.dead),
                     dead_letters_repeated=len(got.dead) - len(dead_at), lost_good_readings=lost_good,
                     lost_bad_records=lost_bad)
    return out


def _episodes(alerts: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per entity, (window end of the open alert, of the close alert or +inf) per episode."""
    opened: dict[str, tuple[str, float]] = {}
    closed: dict[str, float] = {}
    for a in alerts:
        eid, end = str(a.get("episode_id")), float(a.get("window_end") or 0.0)
        if a.get("kind") == "open":
            opened.setdefault(eid, (str(a.get("entity")), end))
        elif a.get("kind") == "close":
            closed[eid] = end
    out: dict[str, list[tuple[float, float]]] = {}
    for eid, (ent, start) in opened.items():
        out.setdefault(ent, []).append((start, closed.get(eid, float("inf"))))
    return out


def _strip(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "detected_at"}


def first_score_after(got: Topics, t_wall: float, before: float = float("inf")) -> float | None:
    """Seconds from ``t_wall`` to the first record on the scores topic appended after it
    (and before ``before``); None if there is none."""
    later = [t for r in got.scores if t_wall <= (t := r.timestamp_ms / 1000.0) < before]
    return min(later) - t_wall if later else None
