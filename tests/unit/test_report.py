"""``streamvae report``: one self-contained HTML page from a replay or score CSV, or from
topic records (no broker here: the Kafka form's records are given as dicts)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from streamvae.cli import main
from streamvae.offline.csvio import read_table
from streamvae.offline.replay import ReplayResult, write_rows
from streamvae.offline.report import render
from streamvae.offline.reportdata import from_records, from_scores_csv

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
N = 120  # readings per entity
ENTITIES = ("pump-01", "pump-02")


def _alert(kind: str, entity: str, end: float, score: float, top: list[tuple[str, float]]) -> dict[str, object]:
    return {"alert_id": f"{kind}-{end}", "kind": kind, "entity": entity, "window_start": end - 10, "window_end": end,
            "score": score, "threshold": 5.0, "model_version": "v-test", "episode_id": f"{entity}-ep",
            "features": [{"name": n, "share": s} for n, s in top], "detected_at": end, "peak_score": 40.0}


@pytest.fixture(scope="module")
def replay_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Readings of two pumps, and the CSV that replay writes for them (by replay's own
    writer): pump-02 has one episode, rows 60-79 flagged, with its open and close alerts."""
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    readings = d / "feed.csv"
    lines = ["ts,entity,temp,pressure"]
    for i in range(N):
        for e in ENTITIES:
            lines.append(f"{T0 + i},{e},{50 + rng.normal():.3f},{5 + rng.normal():.3f}")
    readings.write_text("\n".join(lines) + "\n")
    table = read_table(readings, keep=("entity",))
    n = len(table.values)
    score = np.where(np.arange(n) >= 20, rng.normal(3, 0.5, n), np.nan)
    thr = np.where(np.isfinite(score), 5.0, np.nan)
    flag = np.zeros(n, dtype=np.int8)
    alert = [""] * n
    rows2 = [i for i in range(n) if table.extra["entity"][i] == "pump-02"]
    for i in rows2[60:80]:
        score[i], flag[i] = 40.0, 1
    alert[rows2[60]], alert[rows2[90]] = "open", "close"
    result = ReplayResult(score, thr, flag, alert, [], range(0, n))
    scores = d / "scores.csv"
    write_rows(scores, table, "entity", result)
    alerts = d / "alerts.jsonl"
    alerts.write_text(json.dumps(_alert("open", "pump-02", T0 + 60, 40.0, [("pressure", 0.81), ("temp", 0.19)])) + "\n"
                      + json.dumps(_alert("close", "pump-02", T0 + 90, 3.0, [("pressure", 0.8)]) | {"resolution": "quiet"}) + "\n")
    return {"readings": readings, "scores": scores, "alerts": alerts, "dir": d}


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_replay_csv_gives_one_self_contained_page(replay_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = replay_files["dir"] / "report.html"
    rc = main(["report", "--csv", str(replay_files["scores"]), "--readings", str(replay_files["readings"]),
               "--alerts", str(replay_files["alerts"]), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    page = out.read_text()
    images = _images(page)
    assert len(images) == 2 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    assert not re.search(r"https?://", page), "the page must open offline"
    assert not re.search(r'(src|href)="(?!data:)', page)
    for e in ENTITIES:
        assert f"<h3>{e}</h3>" in page
    # summary: 2 entities, 240 readings, 220 windows scored (not the first 20 rows), 20 flagged, 1 episode, 1 version
    assert "<tr><td>2</td><td>240</td><td>220</td><td>20</td><td>9.09%</td><td>1</td><td>0</td><td>1</td></tr>" in page
    # the episode table: who, when, its top features, the model version and why it closed
    assert ("<td class=l>pump-02</td><td>2026-01-01 00:01:00</td><td>2026-01-01 00:01:30</td><td>30</td><td>40</td>"
            "<td>pressure .80</td><td>v-test</td><td>quiet</td>") in page
    assert "streamvae 0.1.0" in page and "2026-01-01 00:00:00 to 2026-01-01 00:01:59 UTC" in page


def test_entities_beyond_the_cap_are_only_in_the_table(replay_files: dict[str, Path]) -> None:
    data = from_scores_csv(replay_files["scores"], replay_files["readings"], replay_files["alerts"])
    page = render(data, max_entities=1)
    assert len(_images(page)) == 1 and "<h3>pump-02</h3>" in page  # the one with the episode
    assert "figures below for 1 of 2 entities" in page and "<td class=l>pump-01</td>" in page


def test_without_alerts_episodes_come_from_the_alert_column(replay_files: dict[str, Path]) -> None:
    data = from_scores_csv(replay_files["scores"])
    [ep] = data.episodes
    assert (ep.entity, ep.start, ep.end, ep.peak, ep.top) == ("pump-02", T0 + 60, T0 + 90, 40.0, ())
    assert data.features == [] and any("--alerts" in n for n in data.notes)


def test_score_csv_runs_of_flagged_rows_are_episodes(tmp_path: Path) -> None:
    p = tmp_path / "scored.csv"
    rows = ["ts,score,threshold,flag,top_features"]
    rows += [f"{T0 + i},{30.0 + i if 10 <= i < 14 else 1.0},5.0,{int(10 <= i < 14)},"
             + ("rpm:0.70;temp:0.20" if 10 <= i < 14 else "") for i in range(30)]
    p.write_text("\n".join(rows) + "\n")
    data = from_scores_csv(p)
    [ep] = data.episodes
    assert (ep.start, ep.end, ep.peak, ep.top) == (T0 + 10, T0 + 13, 43.0, (("rpm", 0.7), ("temp", 0.2)))
    page = render(data)
    assert "rpm .70, temp .20" in page and len(_images(page)) == 1


def test_topic_records_make_the_same_page() -> None:
    inputs = [{"entity": "pump-01", "ts": T0 + i, "values": {"temp": 50.0 + i % 3, "rpm": None}} for i in range(50)]
    inputs.append({"entity": "pump-01", "readings": [{"ts": T0 + 50, "values": {"temp": 51.0}}]})
    inputs.append({"not": "a reading"})
    scores = [{"entity": "pump-01", "window_start": T0 + i - 9, "window_end": T0 + i, "score": 1.0, "threshold": 5.0,
               "flagged": False, "model_version": "v1" if i < 30 else "v2", "partition": 0, "offset": i}
              for i in range(9, 51)]
    alerts: list[dict[str, object]] = [_alert("open", "pump-01", T0 + 40, 40.0, [("temp", 0.9)]),
                                       {"alert_id": "x", "kind": "input_rejected", "entity": None}]
    data = from_records(inputs, alerts, scores, "Kafka test")
    s = data.series["pump-01"]
    assert data.features == ["temp", "rpm"] and s.values.shape == (51, 2) and np.isnan(s.values[:, 1]).all()
    assert data.episodes[0].end is None and any("1 input records" in n for n in data.notes)
    page = render(data.between(T0 + 20, None))
    assert "<td>ongoing</td>" in page and "<td class=l>v1</td>" in page and "<td class=l>v2</td>" in page


@pytest.mark.parametrize("argv, message", [
    (["--csv", "missing.csv", "--out", "r.html"], "cannot read --csv missing.csv"),
    (["--csv", "x.csv", "--out", "r.png"], "--out must be a file name ending in .html"),
    (["--csv", "x.csv", "--out", "r.html", "--since", "yesterday"], "--since must be epoch seconds or an ISO-8601"),
    (["--csv", "x.csv", "--out", "r.html", "--input", "sensors"], "--input TOPIC goes with --bootstrap"),
    (["--bootstrap", "localhost:9092", "--out", "r.html"], "with --bootstrap give --input TOPIC and --alerts TOPIC"),
])
def test_bad_arguments_give_one_line(argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_a_csv_of_another_shape_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "feed.csv"
    p.write_text("ts,temp\n1,2\n")
    assert main(["report", "--csv", str(p), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "expected those of streamvae replay" in err and err.count("\n") == 1
