"""``streamvae evaluate nab``: run, score and report (see :mod:`streamvae.offline.nab`)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from streamvae.errors import ConfigError
from streamvae.offline.nab import FileRun, corpus, data_dir, plot_run, profiles, run_all, score_runs
from streamvae.offline.progress import Progress

# NAB's own scoring of published outputs on these 35 files (../shared/data/nab-dev/README.md)
REFERENCE = [
    ("numenta (HTM)", 66.59, 60.81, 71.06),
    ("ARTime", 67.85, 57.84, 73.72),
    ("windowedGaussian", 21.97, 4.87, 29.80),
    ("random", 19.56, 6.37, 28.76),
    ("null (detects nothing)", 0.0, 0.0, 0.0),
]


def evaluate_nab_cmd(args: argparse.Namespace) -> int:
    from streamvae.offline.commands import _vae_config, detection_config

    root = data_dir(args.data)
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    if jobs < 1:
        raise ConfigError(f"--jobs must be an int >= 1; got {jobs}")
    cfg = detection_config(args)
    files = corpus(root)
    profs = profiles(root)
    vae = _vae_config(args, 1)
    if jobs == 1:
        from streamvae.model import configure_threads

        configure_threads(1)
    print(f"NAB on {root}: {len(files)} files, window {vae.window}, threshold {cfg.threshold.kind} q={cfg.threshold.q}, "
          f"episodes open after {cfg.episodes.open_after} windows; {jobs} process(es)", flush=True)
    t0 = time.perf_counter()
    bar, done = Progress.for_args(args, "nab"), [0, 0]

    def progress(r: FileRun) -> None:
        done[0] += 1
        done[1] += len(r.ts)
        bar.clear()  # the result line goes to the terminal the bar is on
        print(f"  {r.name:<58} {int(r.opened.sum()):3d} alerts  ({r.seconds:.1f}s)", flush=True)
        bar.step(done[0], len(files), done[1])

    bar.step(0, len(files), 0)
    runs = run_all(files, cfg, vae, jobs, progress)
    bar.clear()
    figures = score_runs(files, runs, profs)
    elapsed = time.perf_counter() - t0
    if args.out:
        out = Path(args.out)
        for f, r in zip(files, runs):
            plot_run(out, f, r)
    _print_report(figures)
    print(f"\n{len(files)} files, {sum(len(r.ts) for r in runs)} rows, {elapsed:.0f}s"
          + (f"; plots in {args.out}/" if args.out else ""))
    if args.json:
        figures["seconds"] = round(elapsed, 1)
        figures["window"] = vae.window
        print(json.dumps(figures))
    return 0


def _print_report(d: dict[str, Any]) -> None:
    print()
    print(f"{'file':<58} {'caught':>7} {'false ep':>8} {'flagged out':>11} {'S std':>7}")
    for f in d["files"]:
        print(f"{f['name']:<58} {f['caught']:>3}/{f['windows']:<3} {f['false_episodes']:>8} "
              f"{100 * f['flagged_share_outside']:>10.1f}% {f['raw_standard']:>7.2f}")
    print()
    print(f"{'category':<24} {'standard':>8} {'low FP':>7} {'low FN':>7} {'caught':>8} {'false ep':>8}")
    for c, v in d["by_category"].items():
        std = "-" if v["standard"] is None else f"{v['standard']:.2f}"
        lfp = "-" if v["low_fp"] is None else f"{v['low_fp']:.2f}"
        lfn = "-" if v["low_fn"] is None else f"{v['low_fn']:.2f}"
        print(f"{c:<24} {std:>8} {lfp:>7} {lfn:>7} {v['windows_caught']:>4}/{v['windows']:<3} {v['false_episodes']:>8}")
    print()
    print(f"{'detector (these files)':<44} {'standard':>8} {'low FP':>7} {'low FN':>7}")
    print("-" * 70)
    print(f"{'streamvae, alert openings (headline)':<44} {d['standard']:>8.2f} {d['low_fp']:>7.2f} {d['low_fn']:>7.2f}")
    c = d["continuous"]
    print(f"{'streamvae, score/threshold, NAB threshold search':<44} {c['standard']:>8.2f} {c['low_fp']:>7.2f} {c['low_fn']:>7.2f}")
    for name, ref_std, ref_lfp, ref_lfn in REFERENCE:
        print(f"{name + ' (published outputs)':<44} {ref_std:>8.2f} {ref_lfp:>7.2f} {ref_lfn:>7.2f}")
    print(f"\nwindows caught {d['windows_caught']}/{d['windows']}; false episodes {d['false_episodes']}; "
          f"median flagged share outside windows {100 * d['flagged_share_outside_median']:.2f}%; "
          f"rows refused {sum(d['refused'].values())} {d['refused'] or ''}; clock steps back {d['clock_resets']}; "
          f"repeated timestamps {d['repeated_ts']}; changes accepted {d['accepted']}")
