"""``streamvae`` command line: argparse subcommands.

Every :class:`StreamvaeError` and every bad argument ends as ONE line on stderr and exit
code 2; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
from typing import NoReturn, Sequence

from streamvae import __version__
from streamvae.errors import ConfigError, StreamvaeError

log = logging.getLogger("streamvae")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _ints(text: str) -> tuple[int, ...]:
    try:
        v = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 128,64; got {text!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 1; got {text!r}")
    return v


def _names(text: str) -> list[str]:
    v = [p.strip() for p in text.split(",") if p.strip()]
    if not v:
        raise argparse.ArgumentTypeError("expected comma-separated column names")
    return v


def _quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress line on stderr (it is drawn only when stderr is a terminal)")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--window", type=int, default=None, help="window length W in readings (default 60)")
    g.add_argument("--stride", type=int, default=None, help="window stride S (default 1)")
    g.add_argument("--encoder", type=_ints, default=None, help="encoder layer sizes, e.g. 128,64 (decoder mirrors them)")
    g.add_argument("--latent", type=int, default=None, help="latent size (default 16)")
    g.add_argument("--samples", type=int, default=None, dest="n_samples", help="L, samples of z per score (default 10)")
    g.add_argument("--epochs", type=int, default=None, help="maximum epochs (early stopping on a validation split)")
    g.add_argument("--min-var", type=float, default=None, dest="min_var", help="floor of the decoder variance, scaled units")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: 2 for training, 1 for scoring)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamvae", description="Streaming anomaly detection for sensor feeds with a VAE.")
    p.add_argument("--version", action="version", version=f"streamvae {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a CSV of normal readings")
    t.add_argument("--csv", required=True, action="append", help="CSV file of readings (repeatable)")
    t.add_argument("--out", required=True, help="new directory for the model artifact")
    t.add_argument("--ts-column", default=None, help="timestamp column (default: the first column)")
    t.add_argument("--features", type=_names, default=None, help="feature columns, comma-separated, in model order")
    t.add_argument("--exclude", type=_names, default=[], help="columns to leave out when --features is not given")
    t.add_argument("--max-gap", type=float, default=None, help="seconds; a longer gap starts a new window sequence")
    _quiet_arg(t)
    _model_args(t)

    s = sub.add_parser("score", help="score a CSV with a trained model")
    s.add_argument("--model", required=True, help="model artifact directory")
    s.add_argument("--csv", required=True, help="CSV file of readings")
    s.add_argument("--out", required=True, help="output CSV: per-row score, threshold, flag, top features")
    s.add_argument("--plot", default=None, help="PNG of features, score, threshold and flagged spans")
    s.add_argument("--ts-column", default=None)
    s.add_argument("--threshold", type=float, default=None, help="override the model's threshold")
    s.add_argument("--threads", type=int, default=1)

    e = sub.add_parser("evaluate", help="evaluate on a labelled benchmark")
    esub = e.add_subparsers(dest="benchmark", required=True, parser_class=_Parser)
    k = esub.add_parser("skab", help="SKAB, leaderboard protocol (outlier detection)")
    k.add_argument("--data", default=None, help="SKAB data folder (default $STREAMVAE_SKAB_DATA or ../shared/data/skab)")
    k.add_argument("--out", default="skab-eval", help="folder for one PNG per file (default ./skab-eval)")
    k.add_argument("--json", action="store_true", help="print one JSON object with the figures as the last line")
    k.add_argument("--q", type=float, default=0.999, help="threshold quantile of the training scores")
    k.add_argument("--margin", type=float, default=2.0, help="threshold margin above the quantile, in (quantile - median) units")
    k.add_argument("--no-plots", action="store_true")
    k.add_argument("--threshold", choices=("static", "spot", "dspot", "quantile"), default="static",
                   help="static: the model's rule on the training scores (default); spot|dspot|quantile: set online by a tracker")
    _threshold_args(k)
    _quiet_arg(k)
    _model_args(k)

    nb = esub.add_parser("nab", help="NAB (Numenta Anomaly Benchmark), NAB's scoring; alert openings are the detections")
    nb.add_argument("--data", default=None, help="NAB folder (default $STREAMVAE_NAB_DATA or ../shared/data/nab-dev)")
    nb.add_argument("--out", default=None, help="folder for one PNG per file (value, score, threshold, windows, alerts)")
    nb.add_argument("--json", action="store_true", help="print one JSON object with the figures as the last line")
    nb.add_argument("--jobs", type=int, default=None, help="files run in parallel (default: 2, or 1 on one core)")
    nb.add_argument("--config", default=None, help="daemon config (TOML) whose detection settings to run (default: the daemon's defaults)")
    nb.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    _quiet_arg(nb)

    run = sub.add_parser("run", help="the consumer daemon: Kafka records in, alerts out")
    run.add_argument("--config", required=True, help="TOML config file (every key overridable by STREAMVAE_<SECTION>__<KEY>)")
    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    cc = csub.add_parser("check", help="validate a config file (with environment overrides) and print it, secrets redacted")
    cc.add_argument("file")

    r = sub.add_parser("replay", help="feed recorded readings through the streaming pipeline, as if live")
    r.add_argument("--csv", required=True, help="CSV of readings in arrival order")
    r.add_argument("--out", required=True, help="output CSV: ts, entity, score, threshold, flag, alert")
    r.add_argument("--entity-column", default=None, help="column naming the entity (default: one entity)")
    r.add_argument("--train-first", default=None, help="train the initial model on the first FRACTION (0-1) or ROWS rows")
    r.add_argument("--model", default=None, help="load this model instead of training one")
    r.add_argument("--ts-column", default=None)
    r.add_argument("--features", type=_names, default=None, help="feature columns (default: all but ts/entity/--exclude)")
    r.add_argument("--exclude", type=_names, default=[], help="columns to ignore")
    r.add_argument("--config", default=None, help="daemon config (TOML): replay runs its [threshold], [episodes], "
                                                  "[records] and [rules] (default: the daemon's defaults)")
    r.add_argument("--threshold", choices=("spot", "dspot", "quantile", "fixed"), default=None,
                   help="threshold.kind (default: the config's, spot)")
    r.add_argument("--batch", type=int, default=500, help="readings per pipeline batch (a poll)")
    _episode_args(r)
    r.add_argument("--alerts", default=None, help="also write the alerts as JSON lines to this file")
    _quiet_arg(r)
    _threshold_args(r)
    _model_args(r)
    _replay_retrain_args(r)
    rt = sub.add_parser("retrain", help="one retrain from the buffered samples: train, validate, promote or reject (cron)")
    rt.add_argument("--config", required=True, help="daemon config: model.path (registry), [retrain], topics.samples/control")
    rt.add_argument("--reason", default=None, help="recorded in HISTORY and in the control event")
    rt.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default 2)")
    rt.add_argument("--seed", type=int, default=0, help="the candidate's training seed (default 0)")
    rt.add_argument("--result", default=None, help="also write the verdict as JSON to this file (atomic): "
                    "result promoted | rejected | failed, version, reasons, the gate's figures")
    _quiet_arg(rt)
    _tool_parsers(sub)
    _models_parsers(sub)
    _report_parser(sub)
    return p


def _report_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``report``: one self-contained HTML page from a scores CSV, or from the topics."""
    p = sub.add_parser("report", help="write one self-contained HTML page: per entity the features, score, threshold, "
                                      "alert episodes and model versions, and a summary")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="output CSV of streamvae replay or score")
    src.add_argument("--bootstrap", help="Kafka bootstrap servers: read --input, --alerts and --scores topics instead")
    p.add_argument("--readings", default=None, help="with --csv: the readings CSV replay/score read (shows the features)")
    p.add_argument("--alerts", default=None, help="with --csv: alerts JSON lines of replay --alerts; with --bootstrap: the alerts topic")
    p.add_argument("--input", default=None, help="with --bootstrap: the input (sensor readings) topic")
    p.add_argument("--scores", default=None, help="with --bootstrap: the scores topic (topics.scores), if the daemons publish it")
    p.add_argument("--since", default=None, help="start of the time range: epoch seconds or ISO-8601 (with --bootstrap: Kafka timestamps)")
    p.add_argument("--until", default=None, help="end of the time range (default: everything there is)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--max-entities", type=int, default=20, help="entities with figures, most alert episodes first (default 20)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach the broker (default 10)")


def _models_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``models list | show | promote | rollback``: the model registry."""
    m = sub.add_parser("models", help="model registry: list, show, promote, roll back versions")
    msub = m.add_subparsers(dest="models_command", required=True, parser_class=_Parser)

    def where(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--registry", help="registry directory (the daemons are not told; they re-read CURRENT within 30 s)")
        g.add_argument("--config", help="daemon config: the registry is model.path, and changes are published on "
                                        "topics.control so every daemon swaps now")

    where(msub.add_parser("list", help="every version, oldest first; * marks CURRENT, < the rollback target"))
    sh = msub.add_parser("show", help="print one version's manifest (JSON)")
    sh.add_argument("version")
    where(sh)
    pr = msub.add_parser("promote", help="verify a version, make it CURRENT, prune old versions, notify the daemons")
    pr.add_argument("version")
    pr.add_argument("--keep", type=int, default=None, help="versions to keep when pruning (default model.keep_versions, 5)")
    pr.add_argument("--reason", default="manual promotion", help="recorded in HISTORY and in the control event")
    where(pr)
    rb = msub.add_parser("rollback", help="make the version CURRENT before the last promotion CURRENT again")
    rb.add_argument("--reason", default="manual rollback", help="recorded in HISTORY and in the control event")
    where(rb)


def _tool_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``simulate`` and ``alerts``: a labelled demo feed into Kafka, and the alerts topic printed."""
    m = sub.add_parser("simulate", help="produce a synthetic multi-entity sensor feed with labelled anomalies to Kafka")
    m.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port...]")
    m.add_argument("--topic", default="sensors", help="topic to produce to (default sensors); key = entity id")
    m.add_argument("--entities", type=int, default=10, help="number of entities, pump-01... (default 10)")
    m.add_argument("--rate", type=float, default=10.0, help="readings per second across all entities (default 10)")
    m.add_argument("--duration", type=float, default=600.0, help="seconds of event time (default 600)")
    m.add_argument("--anomalies", default="none",
                   help="e.g. 'spike:2,level_shift,drift,duration=90' or 'all:2'; kinds: spike, level_shift, drift, stuck, "
                        "broken_correlation, noise_burst, dead, all; keys: duration, spike_duration, severity, warmup, gap")
    m.add_argument("--truth", default=None, help="write the ground truth (feed settings and episodes) to this JSON file")
    m.add_argument("--seed", type=int, default=0, help="noise and anomaly placement (default 0)")
    m.add_argument("--plant", type=int, default=0, help="the entities' operating points; use the same one for training data")
    m.add_argument("--period", type=float, default=600.0, help="seconds of one load cycle, the feed's 'day' (default 600)")
    m.add_argument("--start", type=float, default=None, help="epoch seconds of the first reading (default: now; "
                   "faster than real time: now - duration, so that no reading is stamped in the future)")
    pace = m.add_mutually_exclusive_group()
    pace.add_argument("--speedup", type=float, default=1.0, help="event time runs X times faster than real time (default 1)")
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no pacing (tests, benchmarks)")
    m.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach the broker (default 10)")

    a = sub.add_parser("alerts", help="print the alerts topic, one line per alert, duplicates dropped")
    a.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port...]")
    a.add_argument("--topic", default="alerts", help="alerts topic (default alerts)")
    a.add_argument("--follow", action="store_true", help="keep reading new alerts until Ctrl-C / SIGTERM")
    a.add_argument("--from-beginning", action="store_true",
                   help="with --follow: start at the oldest alert (default: only new ones); without --follow every alert is read")
    a.add_argument("--json", action="store_true", help="print each alert as its JSON object")
    a.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach the broker (default 10)")


def _replay_retrain_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retraining (back-test the retrain loop; defaults from the [retrain] config section)")
    g.add_argument("--retrain", action="store_true", help="buffer normal windows and retrain when due; adds a model_version column")
    g.add_argument("--retrain-every", type=int, default=None, help="retrain after N new buffered windows (default 0: never)")
    g.add_argument("--retrain-schedule", type=float, default=None, help="seconds of stream time between scheduled retrains")
    g.add_argument("--retrain-drift", choices=("adwin", "page_hinkley", "none"), default=None,
                   help="drift detector on the scores of normal windows (default adwin)")
    g.add_argument("--retrain-epochs", type=int, default=None, help="maximum epochs of a retrain (default 20)")
    g.add_argument("--retrain-min-interval", type=float, default=None, help="seconds of stream time between retrains (default 600)")
    g.add_argument("--retrain-min-windows", type=int, default=None, help="buffered windows needed to retrain (default 1000)")
    g.add_argument("--retrain-buffer", type=int, default=None, help="normal windows kept (default 20000)")
    g.add_argument("--retrain-sample-every", type=int, default=None, help="keep 1 normal window in N per entity (default 10)")
    g.add_argument("--retrain-margin", type=float, default=None, help="seconds around an episode with no sample (default 300)")
    g.add_argument("--retrain-tolerance", type=float, default=None, help="gate tolerance on AUC and detection (default 0.01)")


def _episode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("episodes (windows of one entity; default: the config's [episodes])")
    g.add_argument("--open-after", type=int, default=None, help="consecutive flagged windows that open an episode")
    g.add_argument("--close-after", type=int, default=None, help="windows without a flag that close it (0: one window length)")
    g.add_argument("--accept-after", type=int, default=None,
                   help="windows an episode lasts before its change may become the new normal (0: never)")


def _threshold_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("threshold tracker")
    g.add_argument("--risk", type=float, default=None, help="spot/dspot: target tail probability q (default 1e-3)")
    g.add_argument("--quantile", type=float, default=None, help="quantile tracker: q (default 0.999)")
    g.add_argument("--depth", type=int, default=None, help="dspot: moving-average depth (default 50)")
    g.add_argument("--value", type=float, default=None, help="fixed: the threshold")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from streamvae.service import logs

    logs.configure(args.debug)  # text, or STREAMVAE_LOG__FORMAT; a command that loads a config applies its [log]
    try:
        if args.command == "train":
            from streamvae.offline.commands import train

            return train(args)
        if args.command == "score":
            from streamvae.offline.commands import score

            return score(args)
        if args.command == "run":
            from streamvae.service.run import run

            return run(args)
        if args.command == "config":
            from streamvae.service.run import config_check

            return config_check(args)
        if args.command == "replay":
            from streamvae.offline.commands import replay_cmd

            return replay_cmd(args)
        if args.command == "evaluate":
            if args.benchmark == "nab":
                from streamvae.offline.nabcmd import evaluate_nab_cmd

                return evaluate_nab_cmd(args)
            from streamvae.offline.commands import evaluate_skab_cmd

            return evaluate_skab_cmd(args)
        if args.command == "models":
            from streamvae.service.models import models

            return models(args)
        if args.command == "retrain":
            from streamvae.service.retrain import retrain_cmd

            return retrain_cmd(args)
        if args.command == "report":
            if args.bootstrap:
                from streamvae.service.reportfeed import report_topics

                return report_topics(args)
            from streamvae.offline.report import report_cmd

            return report_cmd(args)
        if args.command in ("simulate", "alerts"):
            from streamvae.service import tools

            return tools.simulate(args) if args.command == "simulate" else tools.alerts(args)
        raise ConfigError(f"unknown command {args.command!r}")
    except StreamvaeError as e:
        if args.debug:
            raise
        logs.exit_line(f"streamvae: error: {e}")
        return 2
    except KeyboardInterrupt:
        logs.exit_line("streamvae: interrupted", logging.WARNING)
        return 130
