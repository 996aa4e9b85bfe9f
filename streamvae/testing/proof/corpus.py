"""The bad-input corpus (issue 16, item 2): 10,000 records the daemon must refuse, mixed
into a normal feed on the real broker.

:func:`corpus` builds it, deterministically from a seed: records of the hand-written
kinds of :data:`KINDS` (each names the reasons it may be refused with; every case of
issue 14 is one of them) and records drawn from ``hypothesis`` strategies (random bytes,
JSON of any shape, records with fields of the wrong type, weird unicode), of which only
those the daemon's own decoder refuses whole are kept (:func:`verdict`). Beside them go
a few *hostile but valid* records (entities that look like paths, thousands of unknown
features next to a known one, no message key): the daemon must take these, not
dead-letter them.

:func:`run` is the scenario: a normal feed (several entities, one reading a second,
absurd values on two of them) with the corpus interleaved, one daemon with its
retraining buffer on, then the reckoning: every bad record on the dead-letter topic once,
with its reason and its original bytes; every window of the feed and of the blocks with
one bad item scored; the daemon never exited; and no buffered normal window holds a
value outside the good feed's range.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer

from streamvae.core.records import RecordDecoder
from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.account import Topics as Output
from streamvae.testing.proof.account import account
from streamvae.testing.proof.badinput import KINDS, MAX_RECORD_BYTES, PROPERTY_SHARE, TOTAL, Bad, Gen, block_one_bad_item, \
    property_records, verdict
from streamvae.testing.proof.plant import FEATURES, T0, WINDOW, Anomaly, Sent, series
from streamvae.testing.proof.run import Run

__all__ = ["KINDS", "MAX_RECORD_BYTES", "TOTAL", "Bad", "T0", "WINDOW", "FEATURES", "corpus", "run", "verdict"]


def corpus(seed: int, now: float, entities: list[str], steps: int, total: int = TOTAL) -> tuple[list[Bad], list[Bad]]:
    """(``total`` records to refuse, the hostile records to accept), in a seeded order.

    Kinds with a cap get it; the other kinds share what is left of ``total`` after
    ``PROPERTY_SHARE`` of it went to hypothesis records. A hypothesis record is kept only
    if the decoder refuses all of it, for the same reason now and an hour later (a
    record it takes, or takes in part, is not bad), so its reason is known exactly."""
    g = Gen(seed, now, entities, steps)
    dec = RecordDecoder(list(FEATURES), max_future_s=300.0)
    n_prop = int(total * PROPERTY_SHARE)
    bad_kinds = {k: v for k, v in KINDS.items() if v[0]}
    capped = sum(cap for r, cap, _ in bad_kinds.values() if cap) + BLOCKS
    share, extra = divmod(total - n_prop - capped, sum(1 for _, cap, _ in bad_kinds.values() if not cap))
    bad: list[Bad] = [block_one_bad_item(g) for _ in range(BLOCKS)]
    for name, (reasons, cap, make) in bad_kinds.items():
        count = cap or share + (extra > 0)
        extra -= not cap
        bad += [Bad(name, *make(g), reasons) for _ in range(count)]
    props: list[Bad] = []
    for attempt in range(10):
        for key, value in property_records(2 * (n_prop - len(props)), seed * 1000 + attempt, entities):
            n, why = verdict(key, value, dec, now)
            if n == 0 and why is not None and verdict(key, value, dec, now + 3600)[1] == why:
                props.append(Bad("property", key, value, frozenset([why])))
        if len(props) >= n_prop:
            break
    if len(props) < n_prop:
        raise RuntimeError(f"hypothesis gave {len(props)} refused records of {n_prop} asked for")
    bad += props[:n_prop]
    good = [Bad(name, *make(g), reasons) for name, (reasons, cap, make) in KINDS.items() if not reasons
            for _ in range(cap)]
    g.rng.shuffle(bad)
    return bad, good


BLOCKS = 30  # blocks of readings with one bad item in a corpus (their good readings are scored)
ABSURD = (1e3, 1e5, 1e8, 1e12, 1e20, 1e30, 3e38, -1e6, -1e15)  # on feature b, whose range is a few units


def run(ctx: Context) -> Outcome:
    """The scenario (see the module doc). Quick: 6 entities x 700 readings, else 12 x 1,500;
    the whole corpus either way."""
    t0 = time.monotonic()
    state = ctx.work / "corpus-state"
    state.mkdir(parents=True, exist_ok=True)
    r = Run(ctx, "corpus", partitions=3, entities=6 if ctx.quick else 12, steps_per_s=1.0, settings={
        "group": {"max_poll_records": 2000},
        "retrain": {"enabled": True, "state_dir": str(state), "drift": "none", "sample_every": 1}})
    r.feeder.producer.close(5)  # this scenario sends its own feed
    names, steps = r.feeder.names, 700 if ctx.quick else 1500
    d = r.start(wait=False)  # it loads TensorFlow while the corpus is drawn
    crashed: list[str] = []
    pos: list[tuple[int, int]] = []
    try:
        bad, hostile = corpus(ctx.seed, time.time(), names, steps)
        feed, anomalies, lo, hi = _feed(names, steps, ctx.seed)
        d.wait_ready(90.0)
        pos = _produce(ctx.bootstrap, r.topics.input, feed, bad + hostile, random.Random(ctx.seed), len(names))
        r.topics.wait_caught_up(300.0, daemon=d)
    except AssertionError as e:  # DaemonError: it exited, or never caught up
        crashed.append(str(e)[-3000:])
    finally:
        rc = d.stop(60.0)
    if not pos:
        raise AssertionError(f"the daemon failed before the corpus was sent: {crashed[0]}")
    got = Output.read(ctx.bootstrap, r.scores, r.topics.alerts, r.topics.dlq)
    sent = Sent(steps, anomalies, pos[: len(bad)], len(feed) + len(bad) + len(hostile))
    out = account(r.outcome, sent, names, got)
    out.crashes = len(r.crashes()) + len(crashed) + (rc != 0 and not r.crashes())
    _check_dead_letters(out, bad, hostile, pos, got)
    blocks = [b for b in bad if b.block]
    for b in blocks:  # the good range: the feed's and the blocks' good readings
        for item in json.loads(b.value or b"{}")["readings"]:
            vals = [v for v in (item.get("values", {}).values() if isinstance(item, dict) else ()) if isinstance(v, float)]
            if len(vals) == len(FEATURES):
                lo, hi = min(lo, *vals), max(hi, *vals)
    _check_blocks(out, blocks, got)
    _check_buffer(out, state / "checkpoint.npz", lo, hi)
    if crashed or out.crashes:
        out.notes["crash_logs"] = crashed + r.crashes()
    out.notes["kinds"] = len({b.kind for b in bad}) - 1  # "property" is not a kind
    out.notes["by_kind"] = dict(sorted(Counter(b.kind for b in bad).items()))
    out.notes["hostile_accepted_kinds"] = dict(Counter(b.kind for b in hostile))
    out.notes["bytes_sent"] = sum(len(b.value or b"") for b in bad + hostile)
    out.wall_s = round(time.monotonic() - t0, 1)
    return out


def _feed(names: list[str], steps: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[Anomaly], float, float]:
    """One reading a second of every entity, step after step; absurd values on ``b`` of
    entities 0 and 3 every 100 steps. Also the anomalies and the good values' range."""
    data = [series(steps, seed=seed * 1000 + k) for k in range(len(names))]
    lo = min(float(x.min()) for x in data)
    hi = max(float(x.max()) for x in data)
    anomalies = []
    for k in (0, 3):
        for j, i in enumerate(range(100, steps - 2 * WINDOW, 100)):
            data[k][i, 1] = ABSURD[(j + k) % len(ABSURD)]
            anomalies.append(Anomaly(names[k], i, 1, 1, ABSURD[(j + k) % len(ABSURD)]))
    feed = [(e.encode(), json.dumps({"entity": e, "ts": T0 + i, "values": dict(zip(FEATURES, map(float, data[k][i])))})
             .encode()) for i in range(steps) for k, e in enumerate(names)]
    return feed, anomalies, lo, hi


def _produce(bootstrap: str, topic: str, feed: list[tuple[bytes, bytes]], extra: list[Bad], rng: random.Random,
             first: int) -> list[tuple[int, int]]:
    """Send the feed with ``extra`` interleaved at random places (after the first
    ``first`` readings, so every entity has a clock); the (partition, offset) of each extra."""
    at = sorted((rng.randrange(first, len(feed) + 1), j) for j in range(len(extra)))
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 << 10,
                      max_request_size=1_048_576)
    futures: list[Any] = [None] * len(extra)
    try:
        nxt = 0
        for i in range(len(feed) + 1):
            while nxt < len(at) and at[nxt][0] == i:
                b = extra[at[nxt][1]]
                futures[at[nxt][1]] = p.send(topic, key=b.key, value=b.value)
                nxt += 1
            if i < len(feed):
                p.send(topic, key=feed[i][0], value=feed[i][1])
        p.flush(120)
        return [(md.partition, md.offset) for md in (f.get(60) for f in futures)]
    finally:
        p.close(10)


def _check_dead_letters(out: Outcome, bad: list[Bad], hostile: list[Bad], pos: list[tuple[int, int]],
                        got: Output) -> None:
    """Each bad record: one dead letter, an expected reason, its key and value as sent
    (a cut value: its first bytes, its length and SHA-256); no hostile record refused."""
    dead: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for rec in got.dead:
        dead.setdefault((rec.value["partition"], rec.value["offset"]), []).append(rec.value)
    wrong_reason: Counter[str] = Counter()
    wrong_bytes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for b, at in zip(bad, pos):
        for env in dead.get(at, [])[:1]:
            reasons[env["reason"]] += 1
            if env["reason"] not in b.reasons:
                wrong_reason[f"{b.kind}:{env['reason']}"] += 1
            if not _same_bytes(b, env):
                wrong_bytes[b.kind] += 1
    refused_hostile = Counter(b.kind for b, at in zip(hostile, pos[len(bad):]) if at in dead)
    known = set(pos)
    out.lost_records += sum(wrong_reason.values()) + sum(wrong_bytes.values()) + sum(refused_hostile.values())
    out.notes.update(dead_letter_reasons=dict(sorted(reasons.items())), wrong_reason=dict(wrong_reason),
                     wrong_bytes=dict(wrong_bytes), hostile_refused=dict(refused_hostile),
                     dead_letters_unexpected=sum(1 for at in dead if at not in known))


def _same_bytes(b: Bad, env: dict[str, Any]) -> bool:
    key = None if env["key_b64"] is None else base64.b64decode(env["key_b64"])
    if key != (None if b.key is None else b.key[:1024]):
        return False
    if b.value is None:
        return env["value_b64"] is None
    kept = base64.b64decode(env["value_b64"])
    whole = env["value_bytes"] == len(b.value) and env["value_sha256"] == hashlib.sha256(b.value).hexdigest()
    return whole and (kept == b.value or (env["value_truncated"] and b.value.startswith(kept)))


def _check_blocks(out: Outcome, blocks: list[Bad], got: Output) -> None:
    """The good readings of the blocks with one bad item: every window they make scored."""
    scored = {(r.value["entity"], float(r.value["window_end"])) for r in got.scores}
    lost_w = lost_r = 0
    for b in blocks:
        ends = b.good[WINDOW - 1:]
        hit = [(b.block, t) in scored for t in ends]
        out.windows += len(ends)
        lost_w += hit.count(False)
        covered = {j + o for j, h in enumerate(hit) if h for o in range(WINDOW)}  # window j holds readings j..j+W-1
        lost_r += sum(1 for j in range(len(b.good)) if j not in covered)
    out.lost_windows += lost_w
    out.lost_records += lost_r
    out.notes.update(block_windows_lost=lost_w, block_readings_lost=lost_r)


def _check_buffer(out: Outcome, path: Path, lo: float, hi: float) -> None:
    """Every window the retraining buffer holds (the checkpoint the clean stop wrote) is
    finite and inside the good feed's range: a value outside it buffered as normal is an
    anomaly missed."""
    if not path.is_file():
        out.notes["buffer"] = f"no checkpoint at {path}"
        out.missed_anomalies += 1
        return
    with np.load(path, allow_pickle=False) as z:
        parts = [z[k] for k in z.files if k.startswith("lifecycle/normal.") and z[k].ndim == 3]
    w = np.concatenate(parts) if parts else np.empty((0, WINDOW, len(FEATURES)), np.float32)
    ok = np.isfinite(w).all(axis=(1, 2)) & (w >= lo - 1e-3).all(axis=(1, 2)) & (w <= hi + 1e-3).all(axis=(1, 2))
    out.missed_anomalies += int((~ok).sum())
    out.notes.update(buffer_windows=len(w), buffer_bad_windows=int((~ok).sum()), good_range=[round(lo, 3), round(hi, 3)])
