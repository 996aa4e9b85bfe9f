"""``streamvae simulate`` (a labelled demo feed into Kafka) and ``streamvae alerts`` (a
subscriber that prints the alerts topic, one line per alert, duplicates dropped)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

from streamvae.config import ENV_PREFIX, KafkaConfig, load_config
from streamvae.core.bounded import BoundedSet
from streamvae.errors import ConfigError
from streamvae.files import write_atomic
from streamvae.kafka.codec import dumps, loads
from streamvae.kafka.tools import BrokerError, Publisher, TopicReader
from streamvae.offline.feed import SensorFeed, parse_anomalies

log = logging.getLogger(__name__)

_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
MAX_SEEN = 1_000_000  # alert ids remembered for dropping duplicates


def kafka_config(bootstrap: str) -> KafkaConfig:
    """``--bootstrap HOST:PORT[,HOST:PORT...]`` -> KafkaConfig, or a ConfigError naming it.

    The other ``[kafka]`` settings (TLS, SASL, ...) come from the environment, as for
    the daemon: ``STREAMVAE_KAFKA__SECURITY_PROTOCOL``, ``..._SASL_PASSWORD`` and so on
    (``scripts/kafka start --secure`` writes them to a file to source)."""
    parts = [p.strip() for p in (bootstrap or "").split(",")]
    for p in parts:
        m = _HOSTPORT.match(p)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise ConfigError(f"--bootstrap must be host:port[,host:port...] with a port in [1, 65535]; got {bootstrap!r}")
    prefix = f"{ENV_PREFIX}KAFKA__"
    env = {k: v for k, v in os.environ.items() if k.startswith(prefix) and k != f"{prefix}BOOTSTRAP_SERVERS"}
    k = load_config(None, env).kafka if env else KafkaConfig()
    return dataclasses.replace(k, bootstrap_servers=",".join(parts),
                               client_id=k.client_id if f"{prefix}CLIENT_ID" in env else "streamvae-tools")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, bool]]:
    """A flag set by SIGINT / SIGTERM (the loop finishes cleanly); old handlers restored after."""
    flag = {"stop": False}

    def handler(signum: int, _frame: FrameType | None) -> None:
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def _positive(name: str, v: float | None) -> None:
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a number > 0; got {v!r}")


def simulate(args: argparse.Namespace) -> int:
    """Produce a seeded feed with labelled anomalies; write the ground truth; one summary line."""
    k = kafka_config(args.bootstrap)
    _positive("--speedup", args.speedup)
    _positive("--connect-timeout", args.connect_timeout)
    spec = parse_anomalies(args.anomalies)
    # A feed faster than real time ends now rather than starting now: its event time never
    # runs ahead of the clock, where the daemon refuses readings (records.max_future_s).
    ahead = args.as_fast_as_possible or args.speedup > 1
    start = round(time.time() - (args.duration if ahead else 0.0), 3) if args.start is None else args.start
    feed = SensorFeed(args.entities, args.rate, args.duration, spec, seed=args.seed, plant=args.plant,
                      period=args.period, start_ts=start)
    truth_path = Path(args.truth) if args.truth else None
    truth = {**feed.truth(), "topic": args.topic, "bootstrap": k.bootstrap_servers}
    speed = None if args.as_fast_as_possible else args.speedup
    pub = Publisher(k, connect_timeout_s=args.connect_timeout)
    try:
        pub.ensure_topic(args.topic)
        if truth_path:
            _write_json(truth_path, truth)  # before sending: an evaluator can read it while the feed runs
    except BaseException:
        pub.close()
        raise
    sent, last_ts = 0, None
    t0 = time.monotonic()
    next_log = t0 + 30.0
    try:
        with _stop_on_signals() as flag:
            for rec in feed.records():
                if flag["stop"]:
                    break
                if speed is not None:
                    wait = t0 + (rec["ts"] - feed.start_ts) / speed - time.monotonic()
                    if wait > 0.002:
                        time.sleep(wait)
                        if flag["stop"]:
                            break
                pub.send(args.topic, rec["entity"], dumps(rec))
                sent += 1
                last_ts = rec["ts"]
                if sent % 1000 == 0:
                    pub.check()
                    now = time.monotonic()
                    if now >= next_log:
                        next_log = now + 30.0
                        log.info("simulate: sent %d of %d records (%d acknowledged)", sent, feed.n_records, pub.acked)
            stopped = flag["stop"]
            pub.flush()
            if pub.acked != sent:
                raise BrokerError(f"{sent - pub.acked} of {sent} records not acknowledged by {k.bootstrap_servers}")
    finally:
        pub.close()
    elapsed = time.monotonic() - t0
    episodes = truth["episodes"]
    if stopped:
        episodes = [dict(e, end_ts=min(e["end_ts"], last_ts)) for e in episodes if last_ts is not None and e["start_ts"] <= last_ts]
        truth = {**truth, "episodes": episodes, "stopped_at": last_ts}
        if truth_path:
            _write_json(truth_path, truth)
    kinds: dict[str, int] = {}
    for e in episodes:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    what = ", ".join(f"{k_} {n}" for k_, n in kinds.items()) or "none"
    print(
        f"simulate: sent {sent} records ({feed.entities} entities, {args.rate:g}/s"
        f"{'' if speed is None else f' x{speed:g}'}) to topic {args.topic!r} in {elapsed:.1f}s, all acknowledged; "
        f"{'stopped early; ' if stopped else ''}injected {len(episodes)} anomalies ({what})"
        + (f"; truth in {truth_path}" if truth_path else "")
    )
    return 0


def _when(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return str(v)
    return datetime.fromtimestamp(v, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def format_alert(a: dict[str, Any], top: int = 3) -> str:
    """One readable line: time, kind, entity, score vs threshold, top features, episode.

    The score is -log p(x); higher is more anomalous. It has no natural zero, so the line
    shows the excess over the threshold, never a ratio.

    Examples
    --------
    >>> print(format_alert({"alert_id": "x", "kind": "open", "entity": "pump-17", "window_end": 1763881200.25,
    ...     "score": 412.7, "threshold": 97.3, "features": [{"name": "pressure", "share": 0.71},
    ...     {"name": "flow", "share": 0.12}], "episode_id": "3f2a1c9b77e0"}))
    2025-11-23T07:00:00.250Z  OPEN    pump-17  score 412.7 > thr 97.3 (+315.4)  pressure 71% flow 12%  ep 3f2a1c9b
    """
    if a.get("kind") == "input_rejected":  # the dead-letter guard: most records of the feed refused
        why = ", ".join(f"{r} {n}" for r, n in (a.get("reasons") or {}).items())
        return (f"{_when(a.get('detected_at'))}  INPUT_REJECTED  {a.get('topic', '?')}  "
                f"{100 * float(a.get('refused_share') or 0):.0f}% of the last {a.get('records', '?')} records refused ({why})")
    score, thr = a.get("score"), a.get("threshold")
    if isinstance(score, (int, float)) and isinstance(thr, (int, float)):
        rel = f"{_num(score)} {'>' if score > thr else '<='} thr {_num(thr)} ({score - thr:+.1f})"
    else:
        rel = f"{_num(score)} (thr {_num(thr)})"
    feats = a.get("features") or []
    shares = [f"{f.get('name')} {100 * f.get('share', 0):.0f}%" for f in feats[:top] if isinstance(f, dict)]
    when = _when(a.get("window_end", a.get("detected_at")))
    kind = str(a.get("kind", "?")).upper()
    return (f"{when}  {kind:<6}  {a.get('entity', '?')}  score {rel}  {' '.join(shares) or '-'}"
            f"  ep {str(a.get('episode_id', '?'))[:8]}")


def alerts(args: argparse.Namespace) -> int:
    """Print the alerts topic; without --follow read what is there and exit, with it run until SIGINT/SIGTERM."""
    k = kafka_config(args.bootstrap)
    _positive("--connect-timeout", args.connect_timeout)
    reader = TopicReader(k, args.topic, from_beginning=args.from_beginning or not args.follow,
                         connect_timeout_s=args.connect_timeout)
    seen = BoundedSet(MAX_SEEN)  # alert ids already printed
    shown = dups = bad = 0
    try:
        with _stop_on_signals() as flag:
            reader.refresh()
            ends = reader.end_offsets()
            last_refresh = time.monotonic()
            while not flag["stop"]:
                if not args.follow and reader.caught_up(ends):
                    break
                if args.follow and time.monotonic() - last_refresh > 5.0:  # the topic may appear or grow
                    reader.refresh()
                    last_refresh = time.monotonic()
                for m in reader.poll(0.5):
                    try:
                        a = loads(m.value or b"")
                    except ValueError:
                        a = None
                    if not isinstance(a, dict) or not isinstance(a.get("alert_id"), str):
                        bad += 1
                        log.warning("alerts: skipped partition %d offset %d: not an alert object", m.partition, m.offset,
                                    extra={"topic": args.topic, "partition": m.partition, "offset": m.offset})
                        continue
                    if a["alert_id"] in seen:
                        dups += 1
                        continue
                    seen.add(a["alert_id"])
                    shown += 1
                    print(dumps(a).decode() if args.json else format_alert(a), flush=True)
    finally:
        reader.close()
    note = "" if ends or args.follow else f" (topic {args.topic!r} does not exist yet)"
    log.info("alerts: %d shown, %d duplicates dropped, %d malformed skipped%s", shown, dups, bad, note)
    return 0
