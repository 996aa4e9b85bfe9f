"""What ``streamvae report`` shows, read from its sources into one shape.

Sources: a scores CSV of ``streamvae replay`` (``ts, entity, part, score, threshold,
flag, alert[, model_version]``) or of ``streamvae score`` (``ts, score, threshold, flag,
top_features``), optionally with the readings CSV it was made from (row by row: the
features) and the alerts JSON lines of ``replay --alerts`` (episodes with their top
features); or records of the input, alerts and scores topics as dicts
(:func:`from_records`, the Kafka form reads them). Scores are ``-log p(x)``: higher means
more anomalous.

Examples
--------
>>> alerts = [{"kind": "open", "entity": "p", "episode_id": "e1", "window_end": 10.0, "score": 9.0,
...            "peak_score": 9.0, "threshold": 5.0, "model_version": "v1", "features": [{"name": "temp", "share": 0.8}]},
...           {"kind": "close", "entity": "p", "episode_id": "e1", "window_end": 20.0, "score": 1.0,
...            "peak_score": 12.0, "threshold": 5.0, "model_version": "v1", "features": [], "resolution": "quiet"}]
>>> [(e.start, e.end, e.peak, e.top, e.resolution) for e in episodes_from_alerts(alerts)]
[(10.0, 20.0, 12.0, (('temp', 0.8),), 'quiet')]
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from streamvae.errors import DataError
from streamvae.offline.csvio import parse_ts, read_table

REPLAY_COLUMNS = ["ts", "entity", "part", "score", "threshold", "flag", "alert"]
SCORE_COLUMNS = ["ts", "score", "threshold", "flag", "top_features"]


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert episode of one entity: ``start`` (opened) to ``end`` (closed; None: still open)."""

    entity: str
    episode_id: str
    start: float
    end: float | None
    peak: float
    top: tuple[tuple[str, float], ...]
    model_version: str
    resolution: str | None = None


@dataclass
class Series:
    """One entity: readings (``ts``, ``values`` (N, F)) and scored windows (``score_ts`` ...)."""

    ts: np.ndarray = field(default_factory=lambda: np.empty(0))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    score_ts: np.ndarray = field(default_factory=lambda: np.empty(0))
    score: np.ndarray = field(default_factory=lambda: np.empty(0))
    threshold: np.ndarray = field(default_factory=lambda: np.empty(0))
    flag: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    version: list[str] = field(default_factory=list)  # per scored window; empty: unknown


@dataclass
class ReportData:
    """Everything the page shows; ``source`` says where it came from, in words."""

    source: str
    features: list[str]
    series: dict[str, Series]
    episodes: list[Episode]
    notes: list[str] = field(default_factory=list)

    def span(self) -> tuple[float, float] | None:
        """First and last timestamp of any reading or scored window."""
        ts = [a for s in self.series.values() for a in (s.ts, s.score_ts) if len(a)]
        return (min(float(a.min()) for a in ts), max(float(a.max()) for a in ts)) if ts else None

    def between(self, since: float | None, until: float | None) -> ReportData:
        """Only what lies in ``[since, until]`` (either None: open)."""
        lo, hi = -math.inf if since is None else since, math.inf if until is None else until
        out: dict[str, Series] = {}
        for e, s in self.series.items():
            r, w = (s.ts >= lo) & (s.ts <= hi), (s.score_ts >= lo) & (s.score_ts <= hi)
            out[e] = Series(s.ts[r], s.values[r] if len(s.values) else s.values, s.score_ts[w], s.score[w], s.threshold[w],
                            s.flag[w], [v for v, k in zip(s.version, w) if k] if s.version else [])
        eps = [x for x in self.episodes if x.start <= hi and (x.end is None or x.end >= lo)]
        return ReportData(self.source, self.features, {e: s for e, s in out.items() if len(s.ts) or len(s.score_ts)}, eps,
                          self.notes)


def _num(text: str) -> float:
    return float(text) if text.strip() else math.nan


def _top(text: str) -> tuple[tuple[str, float], ...]:
    """``temp:0.71;rpm:0.20`` (the score CSV's top_features) -> pairs."""
    pairs = [p.rsplit(":", 1) for p in text.split(";") if ":" in p]
    return tuple((n, float(s)) for n, s in pairs)


def _features(a: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    return tuple((str(f["name"]), float(f["share"])) for f in a.get("features") or [] if isinstance(f, dict) and "name" in f)


def episodes_from_alerts(alerts: Iterable[dict[str, Any]]) -> list[Episode]:
    """Group alerts (open / update / close, any order, duplicates allowed) by episode id.

    The top features are those of the latest alert that names any (a close carries the
    peak's); an episode with no close is still open (``end`` None)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        if a.get("kind") in ("open", "update", "close") and a.get("episode_id") and a.get("entity") is not None:
            by[str(a["episode_id"])].append(a)
    out = []
    for eid, group in by.items():
        group.sort(key=lambda a: (float(a["window_end"]), ("open", "update", "close").index(a["kind"])))
        first, last = group[0], group[-1]
        tops = [_features(a) for a in group if _features(a)]
        peak = max(float(a.get("peak_score") or a.get("score") or -math.inf) for a in group)
        out.append(Episode(str(first["entity"]), eid, float(first["window_end"]),
                           float(last["window_end"]) if last["kind"] == "close" else None, peak, tops[-1] if tops else (),
                           str(first.get("model_version", "")), last.get("resolution") if last["kind"] == "close" else None))
    return sorted(out, key=lambda e: (e.start, e.entity))


def _runs(entity: str, ts: np.ndarray, score: np.ndarray, flag: np.ndarray, top: list[str], version: str) -> list[Episode]:
    """A score CSV has no episode logic: every run of flagged rows is one episode."""
    f = np.concatenate([[False], flag.astype(bool), [False]]).astype(np.int8)
    starts, ends = np.nonzero(np.diff(f) == 1)[0], np.nonzero(np.diff(f) == -1)[0]
    out = []
    for a, b in zip(starts, ends):
        k = a + int(np.nanargmax(score[a:b]))
        out.append(Episode(entity, f"rows-{a}-{b - 1}", float(ts[a]), float(ts[b - 1]), float(score[k]), _top(top[k]), version))
    return out


def read_alerts(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of ``replay --alerts`` (one alert object a line)."""
    import orjson

    p = Path(path)
    try:
        lines = p.read_bytes().splitlines()
    except OSError as e:
        raise DataError(f"cannot read --alerts {p}: {e.strerror or e}") from e
    out = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                a = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise DataError(f"--alerts {p} line {n}: not a JSON object (expected the JSON lines of replay --alerts)") from None
            if isinstance(a, dict):
                out.append(a)
    return out


def from_scores_csv(path: str | Path, readings: str | Path | None = None, alerts: str | Path | None = None) -> ReportData:
    """A scores CSV of ``replay`` or ``score`` (told apart by its header), with the readings
    CSV it was made from (same rows in the same order) and the alerts of ``replay --alerts``."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read --csv {p}: {getattr(e, 'strerror', None) or e}") from e
    if len(rows) < 2:
        raise DataError(f"--csv {p} has no rows (expected the output CSV of streamvae replay or score)")
    head, body = rows[0], [r for r in rows[1:] if r]
    replay = head[: len(REPLAY_COLUMNS)] == REPLAY_COLUMNS
    if not replay and head != SCORE_COLUMNS:
        raise DataError(f"--csv {p} has columns {head}; expected those of streamvae replay {REPLAY_COLUMNS} "
                        f"or streamvae score {SCORE_COLUMNS}")
    col = {c: i for i, c in enumerate(head)}
    try:
        ts = np.array([parse_ts(r[0]) for r in body])
        score = np.array([_num(r[col["score"]]) for r in body])
        thr = np.array([_num(r[col["threshold"]]) for r in body])
        flag = np.array([r[col["flag"]].strip() == "1" for r in body])
    except (ValueError, IndexError) as e:
        raise DataError(f"--csv {p}: unreadable row ({e})") from e
    ents = [r[col["entity"]] for r in body] if replay else ["default"] * len(body)
    versions = [r[col["model_version"]] for r in body] if "model_version" in col else []
    names: list[str] = []
    values = np.empty((len(body), 0))
    if readings is not None:
        t = read_table(readings, keep=("entity",) if replay and "entity" in _header(readings) else ())
        if len(t.values) != len(body) or not np.allclose(t.ts, ts, equal_nan=True):
            raise DataError(f"--readings {t.path} does not match --csv {p} row by row ({len(t.values)} vs {len(body)} rows); "
                            "give the CSV that replay or score read")
        names, values = t.feature_names, t.values
    series: dict[str, Series] = {}
    idx: dict[str, list[int]] = defaultdict(list)
    for i, ent in enumerate(ents):
        idx[ent].append(i)
    for ent, rix in idx.items():
        ix = np.asarray(rix)
        w = ix[np.isfinite(score[ix])]
        series[ent] = Series(ts[ix], values[ix], ts[w], score[w], thr[w], flag[w], [versions[i] for i in w] if versions else [])
    notes = [] if readings is not None else ["no --readings given: the features are not shown"]
    if replay:
        if alerts is not None:
            eps = episodes_from_alerts(read_alerts(alerts))
            served = {ep.model_version for ep in eps}
            if not versions and len(served) == 1:  # without --retrain one model serves every row
                for s in series.values():
                    s.version = list(served) * len(s.score_ts)
        else:
            eps = _episodes_from_column(ents, ts, score, [r[col["alert"]] for r in body])
            notes.append("no --alerts given: episodes come from the alert column, without their top features")
    else:
        eps = _runs("default", ts, score, flag, [r[col["top_features"]] for r in body], "")
        notes.append("a score CSV has no episode logic: each run of flagged rows is shown as one episode")
    return ReportData(f"{'replay' if replay else 'score'} CSV {p.name}", names, series, eps, notes)


def _header(path: str | Path) -> list[str]:
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read --readings {path}: {getattr(e, 'strerror', None) or e}") from e


def _episodes_from_column(ents: list[str], ts: np.ndarray, score: np.ndarray, kinds: list[str]) -> list[Episode]:
    """Episodes from replay's ``alert`` column (``open``, ``close``, ``open+close`` ...)."""
    opened: dict[str, tuple[int, float]] = {}
    out: list[Episode] = []
    for i, (e, k) in enumerate(zip(ents, kinds)):
        if e in opened and np.isfinite(score[i]):
            opened[e] = (opened[e][0], max(opened[e][1], float(score[i])))
        for kind in k.split("+") if k and not k.startswith("refused") else ():
            if kind == "open":
                opened[e] = (i, float(score[i]))
            elif kind == "close" and e in opened:
                j, peak = opened.pop(e)
                out.append(Episode(e, f"{e}@{ts[j]:g}", float(ts[j]), float(ts[i]), peak, (), ""))
    out += [Episode(e, f"{e}@{ts[j]:g}", float(ts[j]), None, peak, (), "") for e, (j, peak) in opened.items()]
    return sorted(out, key=lambda x: (x.start, x.entity))


def from_records(inputs: Iterable[dict[str, Any]], alerts: Iterable[dict[str, Any]], scores: Iterable[dict[str, Any]],
                 source: str) -> ReportData:
    """Records of the input topic (``{"entity", "ts", "values"}`` or a block of ``readings``),
    the alerts topic and, if published, the scores topic (``topics.scores``), as dicts.
    Records that do not have that shape are skipped and counted in a note."""
    rows: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    names: dict[str, None] = {}
    skipped = 0
    for r in inputs:
        try:
            block = r["readings"] if "readings" in r else [r]
            for x in block:
                v = x["values"]
                rows[str(r["entity"])].append((_ts(x["ts"]), v))
                names.update(dict.fromkeys(k for k in v if isinstance(k, str)))
        except (KeyError, TypeError, ValueError, DataError):
            skipped += 1
    feats = list(names)
    series: dict[str, Series] = {}
    for e, rs in rows.items():
        rs.sort(key=lambda x: x[0])
        vals = np.array([[_value(v.get(n)) for n in feats] for _, v in rs], dtype=float).reshape(len(rs), len(feats))
        series[e] = Series(np.array([t for t, _ in rs]), vals)
    sc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        if isinstance(s.get("entity"), str) and isinstance(s.get("window_end"), (int, float)):
            sc[s["entity"]].append(s)
    for e, ss in sc.items():
        ss = sorted({(s["window_end"], s.get("model_version")): s for s in ss}.values(), key=lambda s: s["window_end"])
        t = series.setdefault(e, Series(values=np.empty((0, len(feats)))))
        t.score_ts = np.array([float(s["window_end"]) for s in ss])
        t.score = np.array([_value(s.get("score")) for s in ss])
        t.threshold = np.array([_value(s.get("threshold")) for s in ss])
        t.flag = np.array([bool(s.get("flagged")) for s in ss])
        t.version = [str(s.get("model_version", "")) for s in ss]
    al = [a for a in alerts if isinstance(a, dict)]
    eps = episodes_from_alerts(al)
    for ep in eps:
        series.setdefault(ep.entity, Series(values=np.empty((0, len(feats)))))
    notes = [f"{skipped} input records of another shape were skipped"] if skipped else []
    if not sc:
        notes.append("no scores topic read: scores and thresholds are shown at the alerts only")
        _scores_from_alerts(series, al)
    return ReportData(source, feats, series, eps, notes)


def _scores_from_alerts(series: dict[str, Series], alerts: list[dict[str, Any]]) -> None:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        if a.get("kind") in ("open", "update", "close") and isinstance(a.get("window_end"), (int, float)):
            by[str(a["entity"])].append(a)
    for e, al in by.items():
        al.sort(key=lambda a: a["window_end"])
        s = series[e]
        s.score_ts = np.array([float(a["window_end"]) for a in al])
        s.score = np.array([_value(a.get("score")) for a in al])
        s.threshold = np.array([_value(a.get("threshold")) for a in al])
        s.flag = np.array([a["kind"] != "close" for a in al])
        s.version = [str(a.get("model_version", "")) for a in al]


def _ts(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        return parse_ts(v)
    raise ValueError(f"bad ts {v!r}")


def _value(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
