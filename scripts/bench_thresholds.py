#!/usr/bin/env python
"""Threshold tracker speed against a plain Python loop, and per-entity memory.

Speed: every tracker kind (fixed, quantile over all history, quantile over a window of
5,000, SPOT, DSPOT) is warm-started on the same 10,000 scores and then fed the same
``--n`` scores, one ``update`` call each, from a Python list. The baseline, in the same
run, is the issue's "plain Python loop that only appends each score to a list":
``for s in xs: out.append(s)``, and the tracker loops have the same shape
(``for s in xs: t.update(s)``). ``ratio = kind rate / baseline rate``; each rate is the
best of ``--repeat`` runs. The same figures with the method pre-bound on both sides
(``app = out.append`` / ``upd = t.update``, the fastest loops Python allows) are printed
too, as ``*_ratio_prebound``: a stricter reading of the same target. The
scores are Gamma(4, 1): positive, right-skewed, like a -log-likelihood.

Memory: the RSS increase (``VmRSS`` in /proc/self/status, after ``gc.collect()``) of
``--entities`` live entities, each holding a full WindowAssembler ring (W=32, F=8), its
own SPOT tracker in a ThresholdBank (each entity is fed ``--min-history`` scores, so every
one of them graduates from the global fallback), and, for 10% of them, an open alert
episode. A second figure is the same number of per-entity SPOT trackers alone, each
with its full store of peaks (``max_peaks``): what those trackers grow to after a long
run (a fresh one holds ~10 peaks). Each memory figure is taken in a fresh interpreter, so
memory freed by other work cannot be reused and hide part of the increase.

Prints a table, then one JSON line: spot_ratio, dspot_ratio, mem_mb_10k_entities,
the per-kind rates and the baseline rate.

    .venv/bin/python scripts/bench_thresholds.py [--n 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvae.core.episodes import EpisodeTracker  # noqa: E402
from streamvae.core.bank import ThresholdBank  # noqa: E402
from streamvae.core.spot import SPOT  # noqa: E402
from streamvae.core.trackers import make_threshold  # noqa: E402
from streamvae.core.windows import WindowAssembler  # noqa: E402
from streamvae.testing.procs import memory_mb  # noqa: E402

KINDS: list[tuple[str, str, dict[str, Any]]] = [
    ("fixed", "fixed", {"value": 12.0}),
    ("quantile", "quantile", {"q": 0.995}),
    ("quantile_w5000", "quantile", {"q": 0.995, "window": 5000}),
    ("spot", "spot", {"q": 1e-3}),
    ("dspot", "dspot", {"q": 1e-3}),
]


def timed(loop: Callable[[], None]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    loop()
    return time.perf_counter() - t0


def baseline_loop(xs: list[float], prebound: bool = False) -> Callable[[], None]:
    def plain() -> None:
        out: list[float] = []
        for s in xs:
            out.append(s)

    def bound() -> None:
        out: list[float] = []
        app = out.append
        for s in xs:
            app(s)

    return bound if prebound else plain


def tracker_loop(kind: str, params: dict[str, Any], warm: np.ndarray, xs: list[float], prebound: bool = False) -> Callable[[], None]:
    t = make_threshold(kind, **params).warm_start(warm)  # not timed

    def plain() -> None:
        for s in xs:
            t.update(s)

    def bound() -> None:
        upd = t.update
        for s in xs:
            upd(s)

    return bound if prebound else plain


def speed(n: int, repeat: int, seed: int, prebound: bool = False) -> tuple[float, dict[str, float], dict[str, float]]:
    """Best-of-``repeat`` rates. Each round times the baseline and then every kind, so a
    neighbour's load on the machine hits both sides of a ratio alike."""
    rng = np.random.default_rng(seed)
    warm = rng.gamma(4.0, size=10_000)
    xs = rng.gamma(4.0, size=n).tolist()
    best = {"baseline": float("inf"), **{name: float("inf") for name, _, _ in KINDS}}
    for _ in range(repeat):
        best["baseline"] = min(best["baseline"], timed(baseline_loop(xs, prebound)))
        for name, kind, params in KINDS:
            best[name] = min(best[name], timed(tracker_loop(kind, params, warm, xs, prebound)))
    flag_rates: dict[str, float] = {}
    for name, kind, params in KINDS:
        t = make_threshold(kind, **params).warm_start(warm)
        head = xs[:100_000]
        flag_rates[name] = sum(t.update(s)[1] for s in head) / len(head)
    rates = {name: n / sec for name, sec in best.items()}
    return rates.pop("baseline"), rates, flag_rates


def build_entities(n_entities: int, min_history: int, seed: int) -> tuple[Any, ...]:
    """The per-entity state of a daemon serving ``n_entities`` live entities."""
    rng = np.random.default_rng(seed)
    w, f = 32, 8
    asm = WindowAssembler(size=w, stride=1, n_features=f, max_entities=n_entities)
    bank = ThresholdBank("spot", {"q": 1e-3}, min_history=min_history, max_entities=n_entities)
    bank.warm_start(rng.gamma(4.0, size=10_000))
    episodes = EpisodeTracker(open_after=1, close_after=60, max_entities=n_entities)
    for e in range(n_entities):
        ent = f"entity-{e:05d}"
        rows = rng.standard_normal((w, f)).astype(np.float32)
        for i in range(w):
            asm.push(ent, float(i), rows[i])
        for s in rng.gamma(4.0, size=min_history).tolist():
            bank.update(ent, min(s, 10.0))  # below the global threshold: every score is learned
        if e % 10 == 0:
            episodes.observe(ent, 0.0, float(w - 1), 50.0, 12.0, True, (("f3", 0.7), ("f1", 0.2)), "bench")
    return asm, bank, episodes


def measure(which: str, n_entities: int, min_history: int, seed: int) -> dict[str, float]:
    """One memory figure, in THIS process: call it in a fresh interpreter (see memory())."""
    gc.collect()
    before = memory_mb()["rss"]
    if which == "entities":
        asm, bank, episodes = build_entities(n_entities, min_history, seed)
        gc.collect()
        after = memory_mb()["rss"]
        assert len(asm) == n_entities and episodes.open_count() == (n_entities + 9) // 10
        own = sum(bank.has_own(f"entity-{e:05d}") for e in range(n_entities))
        assert own == n_entities, f"only {own} of {n_entities} entities have their own tracker"
        return {"mb": after - before}
    # Steady state of one per-entity SPOT: its store holds max_peaks peaks (arrival order
    # + sorted buffer) after ~max_peaks / (1 - level) scores. Built directly, warm-started
    # on 10,000 distinct scores each (2% above the 0.98 level = 200 peaks).
    max_peaks = ThresholdBank("spot").entity_params["max_peaks"]
    rng = np.random.default_rng(seed + 1)
    trackers = [SPOT(q=1e-3, max_peaks=max_peaks).warm_start(rng.gamma(4.0, size=int(max_peaks / 0.02)))
                for _ in range(n_entities)]
    gc.collect()
    after = memory_mb()["rss"]
    peaks = sum(len(t.to_state()["peaks"]) for t in trackers) / n_entities
    return {"mb": after - before, "peaks": peaks}


def memory(n_entities: int, min_history: int, seed: int) -> dict[str, float]:
    """Each figure in a fresh interpreter: memory freed by earlier work (the speed runs'
    million-score lists) would otherwise be reused and hide part of the increase."""
    out = {}
    for which in ("entities", "full_spot"):
        cmd = [sys.executable, __file__, "--measure", which, "--entities", str(n_entities),
               "--min-history", str(min_history), "--seed", str(seed)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out[which] = json.loads(res.stdout.strip().splitlines()[-1])
    return {"fresh": out["entities"]["mb"], "full_spot": out["full_spot"]["mb"], "mean_peaks_full": out["full_spot"]["peaks"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="scores fed to each tracker")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    ap.add_argument("--entities", type=int, default=10_000, help="live entities for the memory figure")
    ap.add_argument("--min-history", type=int, default=50, help="scores per entity before its own tracker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", choices=("entities", "full_spot"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # child process of memory()
        print(json.dumps(measure(args.measure, args.entities, args.min_history, args.seed)))
        return

    mem = memory(args.entities, args.min_history, args.seed)
    base, rates, flag_rates = speed(args.n, args.repeat, args.seed)
    base_b, rates_b, _ = speed(args.n, args.repeat, args.seed, prebound=True)

    print(f"threshold update rate, {args.n:,} Gamma(4) scores, warm start 10,000, best of {args.repeat}, one thread")
    print(f"{'loop':<26} {'updates/s':>13} {'ns/update':>10} {'ratio':>7} {'flagged':>9}")
    print("-" * 69)
    print(f"{'list.append (baseline)':<26} {base:>13,.0f} {1e9 / base:>10.1f} {1.0:>7.3f} {'':>9}")
    for name, r in rates.items():
        print(f"{name:<26} {r:>13,.0f} {1e9 / r:>10.1f} {r / base:>7.3f} {100 * flag_rates[name]:>8.3f}%")
    print(f"{'pre-bound list.append':<26} {base_b:>13,.0f} {1e9 / base_b:>10.1f} {1.0:>7.3f} {'':>9}")
    for name in ("spot", "dspot"):
        r = rates_b[name]
        print(f"{name + ', pre-bound':<26} {r:>13,.0f} {1e9 / r:>10.1f} {r / base_b:>7.3f} {'':>9}")
    print("flagged: share of the first 100,000 scores; nominal 0.5% for the q=0.995 quantiles, 0.1% for SPOT/DSPOT")
    print()
    print(f"memory, {args.entities:,} live entities (ring W=32 F=8, own SPOT after {args.min_history} scores, "
          f"10% with an open episode): {mem['fresh']:.1f} MiB RSS")
    print(f"  {args.entities:,} per-entity SPOT trackers alone, each with a full store of {mem['mean_peaks_full']:.0f} peaks: "
          f"{mem['full_spot']:.1f} MiB RSS")
    out = {
        "spot_ratio": round(rates["spot"] / base, 4),
        "dspot_ratio": round(rates["dspot"] / base, 4),
        "spot_ratio_prebound": round(rates_b["spot"] / base_b, 4),
        "dspot_ratio_prebound": round(rates_b["dspot"] / base_b, 4),
        "mem_mb_10k_entities": round(mem["fresh"], 1),
        "mem_mb_10k_full_spot_trackers": round(mem["full_spot"], 1),
        "entities": args.entities,
        "baseline_rate": round(base),
        "rates": {k: round(v) for k, v in rates.items()},
        "ratios": {k: round(v / base, 4) for k, v in rates.items()},
        "n": args.n,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
