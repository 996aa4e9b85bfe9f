#!/usr/bin/env python3
"""The proof behind ``scripts/proof``: the daemon under faults and hostile input, accounted for.

Scenarios (streamvae/testing/proof/), each on the real broker with its own topics:

- ``corpus``: 10,000 malformed records of >= 30 kinds mixed into a normal feed;
- ``crashloop``: SIGKILL at 20 moments (3 with ``--quick``), default delivery;
- ``crashloop-eos``: the same in ``group.delivery = "exactly_once"``;
- ``rebalance``: one, two, three, then one daemon of one group on 6 partitions;
- ``brokerfaults``: the broker stopped for 30 s and restarted, twice (once with ``--quick``),
  on a broker of its own;
- ``soak`` (only with ``--soak MINUTES``): a steady feed over 10,000 entities.

Prints one row per scenario, then ONE JSON line (the last line): ``lost_records``,
``lost_windows``, ``missed_anomalies``, ``crashes``, ``duplicate_alerts_exactly_once``,
``recovery_s_max``, ``soak_rss_growth`` (null without ``--soak``), and ``scenarios`` (every
outcome). Exit status 1 when any of the zeros is not zero.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvae.testing.broker import start_broker, use_broker  # noqa: E402
from streamvae.testing.proof import Context, Outcome  # noqa: E402
from streamvae.testing.proof.plant import train_model  # noqa: E402

SCENARIOS = ("corpus", "crashloop", "crashloop-eos", "rebalance", "brokerfaults")


def scenario(name: str) -> Callable[[Context], Outcome]:
    """The scenario's ``run`` (imported when asked for: each module brings its own feed)."""
    import importlib

    if name == "crashloop-eos":
        from streamvae.testing.proof import crashloop

        return lambda ctx: crashloop.run(ctx, delivery="exactly_once")
    run: Callable[[Context], Outcome] = importlib.import_module(f"streamvae.testing.proof.{name}").run
    return run


def summary(outcomes: list[Outcome], soak: Outcome | None) -> dict[str, Any]:
    every = outcomes + ([soak] if soak is not None else [])
    recov = [r for o in every for r in o.recovery_s]
    return {
        "lost_records": sum(o.lost_records for o in every),
        "lost_windows": sum(o.lost_windows for o in every),
        "missed_anomalies": sum(o.missed_anomalies for o in every),
        "crashes": sum(o.crashes for o in every),
        "duplicate_alerts_exactly_once": sum(o.duplicate_alerts for o in every if o.exactly_once),
        "duplicate_alerts_at_least_once": sum(o.duplicate_alerts for o in every if not o.exactly_once),
        "recovery_s_max": max(recov) if recov else None,
        "soak_rss_growth": None if soak is None else soak.notes.get("rss_growth"),
        "scenarios": [o.as_dict() for o in every],
    }


def table(outcomes: list[Outcome]) -> str:
    head = ("scenario", "records", "bad", "windows", "anomalies", "lost rec", "lost win", "missed", "crashes",
            "dup alerts", "recovery max s", "wall s")
    rows = [head]
    for o in outcomes:
        rec = f"{max(o.recovery_s):.1f}" if o.recovery_s else "-"
        rows.append((o.name + (" (exactly once)" if o.exactly_once else ""), str(o.records), str(o.bad_records),
                     str(o.windows), str(o.anomalies), str(o.lost_records), str(o.lost_windows),
                     str(o.missed_anomalies), str(o.crashes), str(o.duplicate_alerts), rec, f"{o.wall_s:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/proof", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the version the test command runs: fewer kills, one outage")
    ap.add_argument("--soak", type=float, metavar="MINUTES", default=None, help="also run the soak for MINUTES")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    ap.add_argument("--bootstrap", default=None, help="a running broker (default: start one)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.soak is not None and not (args.soak > 0 and math.isfinite(args.soak)):
        ap.error("--soak takes a positive number of minutes")
    work = args.out or Path(tempfile.mkdtemp(prefix="streamvae-proof-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"proof: work folder {work}", file=sys.stderr)
    bootstrap, started = use_broker(args.bootstrap)
    outcomes: list[Outcome] = []
    soak: Outcome | None = None
    try:
        print("proof: training the plant's model", file=sys.stderr)
        model = train_model(work)
        for name in names:
            own = start_broker() if name == "brokerfaults" else None
            ctx = Context(own.bootstrap if own else bootstrap, model, work / name, args.quick, args.seed, own)
            ctx.work.mkdir(parents=True, exist_ok=True)
            print(f"proof: {name} ...", file=sys.stderr)
            t0 = time.monotonic()
            try:
                out = scenario(name)(ctx)
            finally:
                if own is not None:
                    own.stop()
            out.wall_s = round(time.monotonic() - t0, 1)
            outcomes.append(out)
            print(f"proof: {name} done in {out.wall_s:.0f} s: {json.dumps({k: v for k, v in out.as_dict().items() if k != 'notes'})}",
                  file=sys.stderr)
        if args.soak is not None:
            from streamvae.testing.proof import soak as soak_mod

            ctx = Context(bootstrap, model, work / "soak", False, args.seed)
            ctx.work.mkdir(parents=True, exist_ok=True)
            soak = soak_mod.run(ctx, args.soak)
    finally:
        if started is not None:
            started.stop()
    print(table(outcomes + ([soak] if soak else [])))
    s = summary(outcomes, soak)
    print(json.dumps(s, default=str))
    clean = all(o.clean for o in outcomes) and (soak is None or soak.clean)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
