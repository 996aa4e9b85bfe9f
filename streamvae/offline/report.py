"""``streamvae report``: one self-contained HTML page of what the detector saw and said.

The page opens offline: its CSS is inline and its figures are PNGs embedded as base64,
with no link to anything outside it. It holds a header (source, time range, generated
at, streamvae version), a summary table, the model versions in force, a table per entity
and one of the alert episodes with their top features, then a figure per entity
(:func:`~streamvae.offline.reportplot.entity_figure`). Figures are drawn for the
``max_entities`` entities with the most alert episodes (then most flagged windows), and
the tables are capped at ``MAX_ROWS`` rows, so a feed of 10,000 entities still makes a
page of a few MB; the page says what it left out.
"""

from __future__ import annotations

import argparse
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamvae import __version__
from streamvae.errors import ConfigError, DataError
from streamvae.files import write_atomic
from streamvae.offline.csvio import parse_ts
from streamvae.offline.reportdata import Episode, ReportData, Series, from_scores_csv
from streamvae.offline.reportplot import data_uri, entity_figure, png_bytes, top_text, when

MAX_ROWS = 500  # rows of the entity and episode tables
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.meta{color:#555}.note{color:#8a5a00}img{max-width:100%}
h3{margin-bottom:2px}"""


@dataclass(frozen=True, slots=True)
class EntityRow:
    """One entity's figures in the summary."""

    entity: str
    readings: int
    windows: int
    flagged: int
    episodes: int
    peak_excess: float  # max(score - threshold); nan: no threshold yet
    versions: tuple[str, ...]

    @property
    def share(self) -> float:
        return self.flagged / self.windows if self.windows else 0.0


def entity_rows(data: ReportData) -> list[EntityRow]:
    """Every entity, most alert episodes first (then most flagged windows, highest excess)."""
    count: dict[str, int] = {}
    for ep in data.episodes:
        count[ep.entity] = count.get(ep.entity, 0) + 1
    rows = []
    for e, s in data.series.items():
        ex = s.score - s.threshold
        ex = ex[np.isfinite(ex)]
        rows.append(EntityRow(e, len(s.ts), len(s.score_ts), int(s.flag.sum()), count.get(e, 0),
                              float(ex.max()) if len(ex) else float("nan"), tuple(dict.fromkeys(v for v in s.version if v))))
    return sorted(rows, key=lambda r: (-r.episodes, -r.flagged, -(r.peak_excess if math.isfinite(r.peak_excess) else -math.inf),
                                       r.entity))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are text (left-aligned); cells are escaped."""
    def cell(tag: str, i: int, v: Any) -> str:
        return f"<{tag}{' class=l' if i < left else ''}>{html.escape(str(v))}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def _g(v: float) -> str:
    return "" if v != v else f"{v:.4g}"


def _versions(data: ReportData) -> list[tuple[str, float, float, int, int]]:
    """(version, first window, last window, windows, entities) of every model version seen."""
    seen: dict[str, list[Any]] = {}
    for e, s in data.series.items():
        for t, v in zip(s.score_ts, s.version):
            if not v:
                continue
            r = seen.setdefault(v, [t, t, 0, set()])
            r[0], r[1], r[2] = min(r[0], t), max(r[1], t), r[2] + 1
            r[3].add(e)
    for ep in data.episodes:
        if ep.model_version and ep.model_version not in seen:
            seen[ep.model_version] = [ep.start, ep.start, 0, {ep.entity}]
    return sorted(((v, float(r[0]), float(r[1]), r[2], len(r[3])) for v, r in seen.items()), key=lambda x: x[1])


def _episode_rows(eps: list[Episode]) -> list[list[Any]]:
    return [[ep.entity, when(ep.start), "ongoing" if ep.end is None else when(ep.end),
             "" if ep.end is None else f"{ep.end - ep.start:.0f}", _g(ep.peak), top_text(ep.top) or "(not known)",
             ep.model_version, ep.resolution or ""] for ep in eps]


EPISODE_HEAD = ["entity", "opened (UTC)", "closed (UTC)", "seconds", "peak score", "top features", "model version",
                "resolution"]


def render(data: ReportData, max_entities: int = 20, generated_at: float | None = None) -> str:
    """The whole page as one HTML string."""
    rows = entity_rows(data)
    span = data.span()
    windows = sum(r.windows for r in rows)
    flagged = sum(r.flagged for r in rows)
    versions = _versions(data)
    ongoing = sum(1 for ep in data.episodes if ep.end is None)
    gen = time.time() if generated_at is None else generated_at
    h = ["<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>streamvae report: "
         f"{html.escape(data.source)}</title><style>{CSS}</style></head><body>",
         "<h1>streamvae report</h1>",
         f"<p class=meta>source: {html.escape(data.source)}<br>time range: "
         + (f"{when(span[0])} to {when(span[1])} UTC" if span else "(no data)")
         + f"<br>generated at {when(gen)} UTC by streamvae {__version__}<br>"
         "score: -log p(x), the reconstruction probability of the window; higher means more anomalous</p>"]
    h += [f"<p class=note>{html.escape(n)}</p>" for n in data.notes]
    h.append("<h2>Summary</h2>")
    h.append(_table(["entities", "readings", "windows scored", "flagged windows", "flagged share", "alert episodes",
                     "still open", "model versions"],
                    [[len(rows), sum(r.readings for r in rows), windows, flagged,
                      f"{100 * flagged / windows:.2f}%" if windows else "", len(data.episodes), ongoing, len(versions)]], left=0))
    if versions:
        h.append("<h2>Model versions in force</h2>")
        h.append(_table(["version", "first window (UTC)", "last window (UTC)", "windows", "entities"],
                        [[v, when(a), when(b), n, k] for v, a, b, n, k in versions], left=3))
    plotted = rows[:max_entities]
    h.append("<h2>Entities</h2>")
    if len(rows) > len(plotted):
        h.append(f"<p class=note>figures below for {len(plotted)} of {len(rows)} entities: those with the most alert "
                 "episodes, then the most flagged windows; the others are only in this table</p>")
    h.append(_table(["entity", "readings", "windows", "flagged", "flagged share", "episodes", "peak score - threshold",
                     "model versions"],
                    [[r.entity, r.readings, r.windows, r.flagged, f"{100 * r.share:.2f}%", r.episodes, _g(r.peak_excess),
                      " ".join(r.versions)] for r in rows[:MAX_ROWS]]))
    if len(rows) > MAX_ROWS:
        h.append(f"<p class=note>{len(rows) - MAX_ROWS} more entities not listed (the table shows the first {MAX_ROWS})</p>")
    h.append("<h2>Alert episodes</h2>")
    eps = sorted(data.episodes, key=lambda e: -e.peak)[:MAX_ROWS] if len(data.episodes) > MAX_ROWS else data.episodes
    h.append(_table(EPISODE_HEAD, _episode_rows(eps)) if eps else "<p>no alert episodes</p>")
    if len(data.episodes) > MAX_ROWS:
        h.append(f"<p class=note>{MAX_ROWS} of {len(data.episodes)} episodes listed: those with the highest peak score</p>")
    h.append("<h2>Per entity</h2>")
    for r in plotted:
        h.append(_entity_section(data, r.entity, data.series[r.entity]))
    h.append("</body></html>\n")
    return "\n".join(h)


def _entity_section(data: ReportData, entity: str, s: Series) -> str:
    eps = [ep for ep in data.episodes if ep.entity == entity]
    fig = entity_figure(entity, s, data.features, eps)
    out = [f"<h3>{html.escape(entity)}</h3>",
           f"<img alt=\"{html.escape(entity)}: features, score, threshold and alert episodes\" src=\"{data_uri(png_bytes(fig))}\">"]
    if eps:
        out.append(_table(["#"] + EPISODE_HEAD[1:], [[i + 1] + r[1:] for i, r in enumerate(_episode_rows(eps))], left=0))
    return "\n".join(out)


def write_report(data: ReportData, out: str | Path, max_entities: int = 20) -> Path:
    """Render ``data`` and write the page to ``out`` atomically."""
    return write_atomic(out, render(data, max_entities).encode("utf-8"))


def time_arg(flag: str, text: str | None) -> float | None:
    """``--since`` / ``--until``: epoch seconds or ISO-8601 (UTC if no zone); None if not given."""
    if text is None:
        return None
    try:
        return parse_ts(text)
    except DataError:
        raise ConfigError.invalid(flag, "epoch seconds or an ISO-8601 time (UTC if no zone)", text) from None


def check_args(args: argparse.Namespace) -> None:
    """The options both forms share: ConfigError naming the bad one."""
    if args.max_entities < 1:
        raise ConfigError.invalid("--max-entities", "an int >= 1", args.max_entities)
    if not str(args.out).endswith((".html", ".htm")):
        raise ConfigError.invalid("--out", "a file name ending in .html", args.out)


def report_cmd(args: argparse.Namespace) -> int:
    """The CSV form: ``--csv SCORES [--readings READINGS] [--alerts ALERTS]``."""
    check_args(args)
    for flag in ("input", "scores"):
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag} TOPIC goes with --bootstrap; with --csv give --readings and --alerts files")
    since, until = time_arg("--since", args.since), time_arg("--until", args.until)
    data = from_scores_csv(args.csv, args.readings, args.alerts)
    if since is not None or until is not None:
        data = data.between(since, until)
    path = write_report(data, args.out, args.max_entities)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {len(data.series)} entities, "
          f"{len(data.episodes)} alert episodes, figures for {min(len(data.series), args.max_entities)}")
    return 0
