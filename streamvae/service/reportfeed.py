"""``streamvae report --bootstrap``: the report from the topics over a time range.

Reads the input topic, the alerts topic and, when given, the scores topic
(``topics.scores``: one record per scored window) between ``--since`` and ``--until``
(Kafka timestamps) and hands the records to :mod:`streamvae.offline.report`.
"""

from __future__ import annotations

import argparse
import time

from streamvae.errors import ConfigError
from streamvae.kafka.codec import loads
from streamvae.kafka.timerange import read_between
from streamvae.offline.report import check_args, time_arg, write_report
from streamvae.offline.reportdata import from_records
from streamvae.service.tools import kafka_config


def _dicts(values: list[bytes]) -> list[dict[str, object]]:
    out = []
    for v in values:
        try:
            d = loads(v)
        except ValueError:
            continue  # not JSON: the report counts only what it can show
        if isinstance(d, dict):
            out.append(d)
    return out


def report_topics(args: argparse.Namespace) -> int:
    """Read the topics and write the page (see the module doc)."""
    check_args(args)
    if not args.input or not args.alerts:
        raise ConfigError("with --bootstrap give --input TOPIC and --alerts TOPIC (and --scores TOPIC if published)")
    if args.readings:
        raise ConfigError("--readings goes with --csv; with --bootstrap the readings come from --input TOPIC")
    since, until = time_arg("--since", args.since), time_arg("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since must be before --until; got {args.since!r} and {args.until!r}")
    k = kafka_config(args.bootstrap)
    t0 = time.monotonic()

    def read(topic: str) -> list[dict[str, object]]:
        return _dicts([m.value for m in read_between(k, topic, since, until, args.connect_timeout)])

    inputs, alerts = read(args.input), read(args.alerts)
    scores = read(args.scores) if args.scores else []
    topics = f"input {args.input}, alerts {args.alerts}" + (f", scores {args.scores}" if args.scores else "")
    data = from_records(inputs, alerts, scores, f"Kafka {args.bootstrap}: {topics}")
    path = write_report(data, args.out, args.max_entities)
    print(f"read {len(inputs)} readings records, {len(alerts)} alerts, {len(scores)} scores in {time.monotonic() - t0:.1f}s; "
          f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {len(data.series)} entities, {len(data.episodes)} episodes")
    return 0
