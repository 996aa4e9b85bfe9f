#!/usr/bin/env python
"""Resident memory of ``streamvae run`` under hostile input, against a clean run of the
same good records, both measured in this run on the real broker.

Each run: a fresh topic and group, ``--records`` good records from ``--entities``
entities pre-produced, the daemon started and left to drain them; in the hostile run the
same good records with these mixed in (issue 14's cases):

- 20 records carrying 40,000 never-seen feature names each (about 0.8 MB each);
- one valid block of 5,000 readings (about 0.8 MB) of a new entity;
- a block of 1,000 old readings (its entity's clock steps back);
- the poison records: nesting 5,000 deep, 400-digit integers as value and ts, 0.9 MB
  of junk, a record over ``records.max_record_bytes``, entities with a lone surrogate
  and a control character, readings stamped 4e9, 1e300, year 9999 and a day ahead;
- absurd values 1e3 .. 3e38 on one feature of 36 entities.

Memory is read from /proc/PID/status once the committed ``scored_to`` of every partition
reaches the end offsets and the daemon has idled ``--settle`` seconds: VmRSS (resident
now) and VmHWM (the peak). Runs alternate clean, hostile, ``--repeats`` times; the
figure is the median. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvae.testing.benchdata import bench_config, bench_topics, make_records, produce_bulk, train_model  # noqa: E402
from streamvae.testing.broker import use_broker  # noqa: E402
from streamvae.testing.paced import FEATURES, T0, series  # noqa: E402
from streamvae.testing.procs import DaemonProc, memory_mb, run_cmd  # noqa: E402


def hostile_records(now: float) -> list[tuple[bytes | None, bytes]]:
    import numpy as np

    rng = np.random.default_rng(7)
    out: list[tuple[bytes | None, bytes]] = []
    for r in range(20):
        vals = {"s0": 0.5, **{f"unknown-{r}-{i}": 1.0 for i in range(40_000)}}
        out.append((b"wide", orjson.dumps({"entity": "wide", "ts": T0 + r, "values": vals})))
    block = [{"ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))} for i, row in enumerate(series(5000, rng).round(4))]
    out.append((b"block-0", orjson.dumps({"entity": "block-0", "readings": block})))
    old = [{"ts": T0 - 10_000 + i, "values": dict(zip(FEATURES, map(float, row)))} for i, row in enumerate(series(1000, rng).round(4))]
    out.append((b"pump-000", orjson.dumps({"entity": "pump-000", "readings": old})))
    long = b"1" + b"0" * 399
    out += [
        (None, b"[" * 5000 + b"]" * 5000),
        (b"pump-001", b'{"entity": "pump-001", "ts": 1, "values": {"s0": ' + long + b"}}"),
        (b"pump-001", b'{"entity": "pump-001", "ts": ' + long + b', "values": {"s0": 1}}'),
        (b"pump-001", b"x" * 900_000),
        (b"pump-001", b'{"entity": "pump-001", "pad": "' + b"y" * 1_000_000 + b'"}'),
        (None, b'{"entity": "pump\\ud800", "ts": 1, "values": {"s0": 1}}'),
        (None, b'{"entity": "pump\\u0007", "ts": 1, "values": {"s0": 1}}'),
    ]
    for ts in (4e9, 1e300, "9999-12-31T23:59:59Z", time.strftime("%Y-%m-%dT%H:%M:%S-23:59", time.gmtime(now))):
        out.append((b"pump-002", orjson.dumps({"entity": "pump-002", "ts": ts, "values": {"s0": 1.0}})))
    for k in range(36):
        y = series(100, rng).round(4)
        y[60, 1] = 10.0 ** (k + 3) if k < 35 else 3.0e38
        name = f"absurd-{k}"
        out += [(name.encode(), orjson.dumps({"entity": name, "ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))}))
                for i, row in enumerate(y)]
    return out


def one_run(bootstrap: str, model: Path, work: Path, records: list[tuple[bytes | None, bytes]], tag: str,
            settle: float) -> dict[str, Any]:
    topics = bench_topics(bootstrap, 4, tag)
    produce_bulk(bootstrap, topics.input, [k for k, _ in records], [v for _, v in records])
    group = f"bench-mem-{uuid.uuid4().hex[:8]}"
    cfg = bench_config(topics, work / f"{tag}.toml", model, group, 2000)
    d = DaemonProc(run_cmd(cfg), work / f"{tag}.log", cwd=ROOT)
    try:
        d.wait_ready(120.0)
        topics.wait_caught_up(600.0, d, group, poll=0.2)
        time.sleep(settle)
        d.check_alive()
        mem = memory_mb(d.proc.pid)
        m = d.totals()
    finally:
        rc = d.stop()
    return {"rss_mb": mem["rss"], "peak_mb": mem["peak"], "records": m.get("records_total", 0),
            "windows": m.get("windows_scored_total", 0), "dead_letters": m.get("dead_letters_total", 0),
            "alerts": m.get("alerts_total", 0), "exit": rc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=40_000, help="good records in each run")
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle after draining, before reading memory")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting a LocalBroker")
    ap.add_argument("--model", default=None, help="a trained model artifact (default: train one, --epochs)")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    broker = None
    try:
        model = Path(args.model) if args.model else train_model(work, args.epochs)[0]
        bootstrap, broker = use_broker(args.bootstrap)
        keys, values, _ = make_records(args.records, args.entities, seed=2026)
        good: list[tuple[bytes | None, bytes]] = list(zip(keys, values))
        bad = hostile_records(time.time())
        half = len(good) // 2
        mixed = good[:half] + bad + good[half:]
        runs: dict[str, list[dict[str, Any]]] = {"clean": [], "hostile": []}
        for r in range(args.repeats):
            for kind, recs in (("clean", good), ("hostile", mixed)):
                res = one_run(bootstrap, model, work, recs, f"{kind}{r}", args.settle)
                runs[kind].append(res)
                print(f"  {kind:8s} run {r}: RSS {res['rss_mb']:7.1f} MiB  peak {res['peak_mb']:7.1f} MiB  "
                      f"records {res['records']:.0f}  windows {res['windows']:.0f}  dead letters {res['dead_letters']:.0f}  "
                      f"alerts {res['alerts']:.0f}  exit {res['exit']}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rss_mb", "peak_mb")} for k, v in runs.items()}
    ratio = med["hostile"]["rss_mb"] / med["clean"]["rss_mb"]
    peak_ratio = med["hostile"]["peak_mb"] / med["clean"]["peak_mb"]
    print()
    print(f"{'run':10s} {'RSS MiB':>9s} {'peak MiB':>9s}   (median of {args.repeats})")
    for k in ("clean", "hostile"):
        print(f"{k:10s} {med[k]['rss_mb']:9.1f} {med[k]['peak_mb']:9.1f}")
    print(f"{'ratio':10s} {ratio:9.3f} {peak_ratio:9.3f}   target: RSS within 5% of the clean run's (ratio <= 1.05)")
    exits = [r["exit"] for v in runs.values() for r in v]
    print(json.dumps({"rss_ratio": round(ratio, 4), "peak_ratio": round(peak_ratio, 4),
                      "clean_rss_mb": round(med["clean"]["rss_mb"], 1), "hostile_rss_mb": round(med["hostile"]["rss_mb"], 1),
                      "clean_peak_mb": round(med["clean"]["peak_mb"], 1), "hostile_peak_mb": round(med["hostile"]["peak_mb"], 1),
                      "daemon_exits_nonzero": sum(1 for x in exits if x != 0),
                      "hostile_dead_letters": runs["hostile"][0]["dead_letters"], "records": args.records,
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
