"""The data scientist's commands: train a CSV, score a CSV, evaluate on SKAB."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamvae.errors import ConfigError, DataError
from streamvae.offline.progress import Progress


if TYPE_CHECKING:  # the real import stays lazy: it loads TensorFlow
    from streamvae.config import Config, RetrainConfig
    from streamvae.model.vae import VAEConfig

log = logging.getLogger(__name__)


def _threads(args: argparse.Namespace, default: int) -> None:
    from streamvae.model import configure_threads

    n = getattr(args, "threads", None) or default
    if n < 1:
        raise ConfigError(f"--threads must be an int >= 1; got {n}")
    configure_threads(n)


def _vae_config(args: argparse.Namespace, n_features: int) -> VAEConfig:
    """The model settings given on the command line; the rest keep VAEConfig's defaults."""
    from streamvae.model.vae import VAEConfig

    keys = ("window", "stride", "encoder", "latent", "n_samples", "epochs", "min_var", "seed")
    kw = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return VAEConfig(n_features=n_features, **kw)


def train(args: argparse.Namespace) -> int:
    from streamvae.core.scaler import Scaler
    from streamvae.core.windows import sliding_windows, typical_interval
    from streamvae.offline.csvio import read_table

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists; choose a new directory")
    tables = [read_table(p, args.ts_column, args.features, exclude=args.exclude) for p in args.csv]
    names = tables[0].feature_names
    for t in tables[1:]:
        if t.feature_names != names:
            raise DataError(f"{t.path} has features {t.feature_names}; {tables[0].path} has {names}")
    _threads(args, 2)
    from streamvae.model.artifact import save
    from streamvae.model.detector import VAEDetector

    cfg = _vae_config(args, len(names))
    cfg = replace(cfg, max_gap=args.max_gap, interval=typical_interval(*(t.ts for t in tables)))
    parts = [sliding_windows(t.values, cfg.window, cfg.stride, t.ts, cfg.max_gap).values for t in tables]
    windows = np.concatenate(parts)
    rows = sum(len(t.values) for t in tables)
    if len(windows) < 10:
        raise DataError(f"{rows} readings give {len(windows)} windows of {cfg.window}; need at least 10 (more data or a smaller --window)")
    scaler = Scaler().fit(np.concatenate([t.values for t in tables]))
    t0 = time.perf_counter()
    bar = Progress.for_args(args, "train")
    det = VAEDetector(cfg, names).fit(windows, scaler=scaler, on_epoch=bar.epoch)
    bar.close()
    path = save(det, out)
    info = det.fit_info_
    print(
        f"trained on {len(windows)} windows ({rows} readings, {len(names)} features) in {time.perf_counter() - t0:.1f}s: "
        f"{info['epochs_run']} epochs, best {info['best_epoch']}; threshold {det.threshold_:.2f}; saved {path}"
    )
    return 0


def _top(shares: np.ndarray, names: list[str], k: int = 3) -> str:
    order = np.argsort(-shares)[:k]
    return ";".join(f"{names[i]}:{shares[i]:.2f}" for i in order if shares[i] > 0)


def score(args: argparse.Namespace) -> int:
    from streamvae.core.windows import sliding_windows
    from streamvae.offline.csvio import read_table

    _threads(args, 1)
    from streamvae.model.artifact import load

    det = load(args.model)
    names = det.names
    table = read_table(args.csv, args.ts_column, names)
    cfg = det.config
    wins = sliding_windows(table.values, cfg.window, 1, table.ts, cfg.max_gap)
    out = det.score(wins.values)
    thr = det.threshold_ if args.threshold is None else args.threshold
    if thr is None:
        raise DataError(f"model {args.model} has no threshold value; pass --threshold")
    n = len(table.values)
    row_score = np.full(n, np.nan)
    row_score[wins.end] = out.score
    flags = np.zeros(n, dtype=bool)
    flags[wins.end] = out.score > thr
    top = [""] * n
    assert out.shares is not None  # scored with detail
    for j, e in enumerate(wins.end):
        if flags[e]:
            top[e] = _top(out.shares[j], names)
    dest = Path(args.out)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts", "score", "threshold", "flag", "top_features"])
            for i in range(n):
                s = row_score[i]
                w.writerow([table.ts_text[i], "" if math.isnan(s) else f"{s:.4f}", f"{thr:.4f}", int(flags[i]), top[i]])
    except OSError as e:
        raise DataError(f"cannot write {dest}: {e.strerror or e}") from e
    if args.plot:
        from streamvae.offline.plots import plot_series

        plot_series(args.plot, table.values, names, row_score, thr, flags, title=f"{Path(args.csv).name}: model {det.version_}")
    print(f"scored {len(wins)} windows of {n} readings: {int(flags.sum())} flagged (threshold {thr:.2f}); wrote {dest}")
    return 0


def threshold_params(args: argparse.Namespace, kind: str) -> dict[str, object]:
    """Tracker parameters from the command line (only those given)."""
    p: dict[str, object] = {}
    if kind in ("spot", "dspot") and args.risk is not None:
        p["q"] = args.risk
    if kind == "dspot" and args.depth is not None:
        p["depth"] = args.depth
    if kind == "quantile":
        p["q"] = 0.999 if args.quantile is None else args.quantile
    if kind == "fixed":
        if args.value is None:
            raise ConfigError("--threshold fixed needs --value")
        p["value"] = args.value
    return p


def detection_config(args: argparse.Namespace) -> Config:
    """The daemon's configuration (``--config FILE``, else its defaults) with the
    command's own options over it: replay and evaluate run what the daemon runs."""
    from streamvae.config import load_config

    cfg = load_config(getattr(args, "config", None))
    t = cfg.threshold
    kind = getattr(args, "threshold", None)
    if kind not in (None, "static"):
        keys = {"q": "q", "depth": "depth", "value": "value"}
        params = {keys[k]: v for k, v in threshold_params(args, kind).items()}
        t = replace(t, kind=kind, **params)  # type: ignore[arg-type]
    e = cfg.episodes
    for opt in ("open_after", "close_after", "accept_after"):
        v = getattr(args, opt, None)
        if v is not None:
            if v < (1 if opt == "open_after" else 0):
                raise ConfigError(f"--{opt.replace('_', '-')} must be an int >= {1 if opt == 'open_after' else 0}; got {v}")
            e = replace(e, **{opt: v})
    return replace(cfg, threshold=t, episodes=e)


def replay_cmd(args: argparse.Namespace) -> int:
    from streamvae.offline.csvio import read_table

    if (args.model is None) == (args.train_first is None):
        raise ConfigError("give exactly one of --model DIR or --train-first FRACTION|ROWS")
    if args.batch < 1:
        raise ConfigError(f"--batch must be an int >= 1; got {args.batch}")
    keep = (args.entity_column,) if args.entity_column else ()
    cfg = detection_config(args)
    rcfg = retrain_config(args, cfg.retrain) if getattr(args, "retrain", False) else None  # bad options fail before training
    _threads(args, 1)
    from streamvae.offline.replay import replay, split_point, train_on, warm_scores, write_rows

    if args.model:
        from streamvae.model.artifact import load

        det = load(args.model)
        table = read_table(args.csv, args.ts_column, det.names, keep=keep)
        start = 0
        warm = det.heldout_scores_
    else:
        table = read_table(args.csv, args.ts_column, args.features, exclude=args.exclude, keep=keep)
        start = split_point(args.train_first, len(table.values))
        bar = Progress.for_args(args, "train")
        det, train_scores = train_on(table, args.entity_column, start, _vae_config(args, len(table.feature_names)),
                                     on_epoch=bar.epoch)
        bar.close()
        print(f"trained on rows 0..{start - 1}: {det.fit_info_['epochs_run']} epochs")
        warm = warm_scores(det, train_scores)
    retrainer = None
    if rcfg is not None:
        from streamvae.offline.replay import ReplayRetrainer

        retrainer = ReplayRetrainer(rcfg, det.config.window, len(det.names))  # the daemon's seeds
    bar = Progress.for_args(args, "replay")
    r = replay(table, det, start, args.entity_column, cfg, warm, batch=args.batch, retrainer=retrainer, progress=bar.rows)
    bar.close()
    write_rows(Path(args.out), table, args.entity_column, r)
    for ev in r.retrains or []:
        print(ev.summary())
    if retrainer is not None:
        c = retrainer.buffer.counts_
        passed = sum(e.passed for e in r.retrains or [])
        print(f"retrains: {len(r.retrains or [])} ({passed} promoted, {len(r.retrains or []) - passed} rejected); "
              f"normal buffer {len(retrainer.buffer)} windows (seen {c.seen}, sampled {c.sampled}, "
              f"dropped near episodes {c.dropped_near_episode}), {len(retrainer.bank)} confirmed-anomaly windows")
    if args.alerts:
        import orjson

        Path(args.alerts).write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in r.alerts))
    n = len(r.replayed)
    scored = int(np.isfinite(r.score[start:]).sum())
    print(f"replayed {n} rows after {start} training rows: {scored} windows scored, {int(r.flag[start:].sum())} flagged, "
          f"{sum(1 for a in r.alerts if a['kind'] == 'open')} episodes, {len(r.alerts)} alerts; wrote {args.out}")
    print(r.summary())
    return 0


# --retrain-* option -> [retrain] key
RETRAIN_FLAGS = {"retrain_every": "after_windows", "retrain_schedule": "schedule", "retrain_drift": "drift",
                 "retrain_epochs": "epochs", "retrain_min_interval": "min_interval", "retrain_min_windows": "min_windows",
                 "retrain_buffer": "max_windows", "retrain_sample_every": "sample_every", "retrain_margin": "margin",
                 "retrain_tolerance": "tolerance"}


def retrain_config(args: argparse.Namespace, base: RetrainConfig | None = None) -> RetrainConfig:
    """The ``[retrain]`` settings for ``replay --retrain``: the config's (``base``; default the
    daemon's defaults), the --retrain-* options over them, each checked by the same rule as
    in a config file (ConfigError naming the flag)."""
    import dataclasses

    from streamvae.config import RetrainConfig

    fields = {f.name: f for f in dataclasses.fields(RetrainConfig)}
    kw: dict[str, object] = {}
    for flag, key in RETRAIN_FLAGS.items():
        v = getattr(args, flag, None)
        if v is None:
            continue
        f = fields[key]
        if isinstance(v, int) and "float" in str(f.type):
            v = float(v)
        if not f.metadata["check"](v):
            raise ConfigError(f"--{flag.replace('_', '-')} must be {f.metadata['allowed']}; got {v!r}")
        kw[key] = v
    return dataclasses.replace(base if base is not None else RetrainConfig(), enabled=True, **kw)  # type: ignore[arg-type]


def evaluate_skab_cmd(args: argparse.Namespace) -> int:
    from streamvae.offline.skab import LEADERBOARD, TRAIN_ROWS, Metrics, data_dir, experiment_files

    root = data_dir(args.data)
    _threads(args, 2)
    from streamvae.offline.evaluate import evaluate_skab, evaluate_skab_streaming
    from streamvae.offline.plots import plot_series

    cfg = _vae_config(args, 8)
    out = Path(args.out)
    t_start = time.perf_counter()
    bar, n_files, done = Progress.for_args(args, "skab"), len(experiment_files(root)), [0, 0]

    def progress(r, dt):  # type: ignore[no-untyped-def]
        m = Metrics.of(r.labels[TRAIN_ROWS:], r.pred[TRAIN_ROWS:])
        done[0] += 1
        done[1] += len(r.labels)
        bar.clear()  # the result line goes to the terminal the bar is on
        print(f"  {r.name:<14} f1 {m.f1:.2f}  far {m.far:5.1f}%  mar {m.mar:5.1f}%  ({dt:.1f}s, {r.extra['epochs']} epochs)", flush=True)
        if not args.no_plots:
            n = len(r.table.values)
            row = np.full(n, np.nan)
            w = cfg.window
            row[w - 1 :] = r.scores  # window j (start) is scored at its last row j + w - 1
            thr = r.extra.get("row_threshold", r.threshold)
            plot_series(
                out / (r.name.replace("/", "_").replace(".csv", ".png")), r.table.values, r.table.feature_names,
                row, thr, r.pred, truth=r.labels, title=f"SKAB {r.name} ({kind} threshold): f1 {m.f1:.2f}",
            )
        bar.step(done[0], n_files, done[1])

    kind = args.threshold
    if kind == "static":
        print(f"SKAB leaderboard protocol on {root}: window {cfg.window}, L={cfg.n_samples}, static threshold q={args.q}, margin={args.margin:.3f}")
        bar.step(0, n_files, 0)
        results, m, mm = evaluate_skab(root, cfg, args.q, args.margin, progress)
        rows = [("streamvae VAE, reconstruction probability", m.f1, m.far, m.mar),
                ("streamvae VAE, same network, plain MSE", mm.f1, mm.far, mm.mar)]
    else:
        params = threshold_params(args, kind)
        det_cfg = detection_config(args)
        print(f"SKAB leaderboard protocol on {root}: window {cfg.window}, L={cfg.n_samples}, online {kind} threshold {params or ''} (no labels used)")
        bar.step(0, n_files, 0)
        results, m = evaluate_skab_streaming(root, cfg, det_cfg, progress)
        mm = None
        rows = [(f"streamvae VAE, online {kind} threshold", m.f1, m.far, m.mar)]
    elapsed = time.perf_counter() - t_start
    bar.clear()
    print()
    print(f"{'Algorithm':<44} {'F1':>5} {'FAR %':>7} {'MAR %':>7}")
    print("-" * 66)
    for name, f1, far, mar in rows:
        print(f"{name:<44} {f1:5.2f} {far:7.2f} {mar:7.2f}")
    for name, f1, far, mar in LEADERBOARD:
        print(f"{name + ' (published)':<44} {f1:5.2f} {far:7.2f} {mar:7.2f}")
    print(f"\n{len(results)} files, {sum(len(r.labels) - TRAIN_ROWS for r in results)} test rows, {elapsed:.0f}s" + ("" if args.no_plots else f"; plots in {out}/"))
    if args.json:
        figures: dict[str, object] = {**m.row(), "threshold": kind}
        if mm is not None:
            figures.update({"mse_f1": round(mm.f1, 4), "mse_far": round(mm.far, 2), "mse_mar": round(mm.mar, 2), "q": args.q, "margin": round(args.margin, 4)})
        else:
            figures["params"] = threshold_params(args, kind)
        figures.update({"files": len(results), "window": cfg.window, "n_samples": cfg.n_samples, "seconds": round(elapsed, 1)})
        print(json.dumps(figures))
    return 0
