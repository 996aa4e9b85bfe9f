"""The report shown in the README (docs/report.png): ``streamvae report`` on demo-like data.

A simulated plant of 4 pumps: normal training data (one CSV per pump), a small VAE
trained on it with ``streamvae train``, then a 1-hour feed of the same plant with injected
anomalies replayed through the daemon's pipeline with ``streamvae replay``, and the
report written from the replay's scores CSV, the readings and the alerts. Every step runs
the real command line; a step whose output exists is skipped (delete the folder to redo).

    .venv/bin/python scripts/report_example.py [--work report-example] [--docs docs] [--screenshot]

About a minute of CPU. It writes docs/report-example.html (the page) and docs/report.png
(the page's first entity figure, drawn again by matplotlib). With --screenshot, and only
where a headless Chromium is installed (Debian: ``apt-get install chromium-headless-shell``
or ``chromium``), it also writes docs/report-screenshot.png, the top of the page as the
browser renders it (pngquant/optipng shrink it when installed); without a browser that
step is skipped with a note. The browser is no dependency of streamvae or its tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTITIES, RATE, SECONDS, TRAIN_SECONDS = 4, 4.0, 3600.0, 3600.0
ANOMALIES = "spike,level_shift,drift,noise_burst,broken_correlation,duration=240"
MODEL_ARGS = ["--window", "30", "--encoder", "64,32", "--latent", "8", "--samples", "5", "--epochs", "25",
              "--threads", "2", "--seed", "0"]


def streamvae(*args: str) -> None:
    cmd = [sys.executable, "-m", "streamvae", *args]
    print("$ streamvae " + " ".join(args), flush=True)
    t = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  ({time.monotonic() - t:.0f}s)", flush=True)


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
SCREEN = "1200,1785"  # the header, every table and the first entity's figure and episodes


def screenshot(page: Path, out: Path) -> bool:
    """Renders the page with a headless Chromium into out; False (and a note) where none is installed."""
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        print(f"--screenshot: no headless Chromium found ({', '.join(BROWSERS)}); skipped", flush=True)
        return False
    raw = out.with_name(out.stem + "-raw.png")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={SCREEN}", f"--screenshot={raw}", page.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)
    if shutil.which("pngquant") and subprocess.run(
            ["pngquant", "--quality=70-95", "--speed", "1", "--force", "--output", str(out), str(raw)]).returncode == 0:
        raw.unlink()
    else:
        os.replace(raw, out)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", str(out)], check=False)
    print(f"screenshot: {out} ({out.stat().st_size / 1e3:.0f} KB, {Path(browser).name})", flush=True)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="report-example", help="folder for the data, model and outputs")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where report-example.html and report.png go")
    p.add_argument("--screenshot", action="store_true",
                   help="also docs/report-screenshot.png, where a headless Chromium is installed (skipped otherwise)")
    args = p.parse_args()
    work, docs = Path(args.work), Path(args.docs)
    work.mkdir(parents=True, exist_ok=True)
    from streamvae.offline.feed import SensorFeed, write_csv, write_training_csvs

    train_dir, feed_csv = work / "train", work / "feed.csv"
    if not train_dir.exists():  # the same plant, another seed, the hour before the feed
        write_training_csvs(train_dir, entities=ENTITIES, seconds=TRAIN_SECONDS, interval=ENTITIES / RATE, seed=1)
    if not feed_csv.exists():
        write_csv(feed_csv, SensorFeed(ENTITIES, RATE, SECONDS, ANOMALIES, seed=12))
    model = work / "model"
    if not model.exists():
        csvs = [a for f in sorted(train_dir.glob("*.csv")) for a in ("--csv", str(f))]
        streamvae("train", *csvs, "--out", str(model), *MODEL_ARGS)
    scores, alerts = work / "scores.csv", work / "alerts.jsonl"
    if not scores.exists():
        streamvae("replay", "--csv", str(feed_csv), "--entity-column", "entity", "--model", str(model),
                  "--out", str(scores), "--alerts", str(alerts), "--threads", "2")
    page, png = work / "report.html", work / "report.png"
    streamvae("report", "--csv", str(scores), "--readings", str(feed_csv), "--alerts", str(alerts), "--out", str(page))
    # the page's first figure, drawn again by the same code
    from streamvae.offline.report import entity_rows
    from streamvae.offline.reportdata import from_scores_csv
    from streamvae.offline.reportplot import entity_figure, png_bytes

    data = from_scores_csv(scores, feed_csv, alerts)
    top = entity_rows(data)[0].entity
    fig = entity_figure(top, data.series[top], data.features, [e for e in data.episodes if e.entity == top])
    png.write_bytes(png_bytes(fig))
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, docs / "report.png")
    size = page.stat().st_size
    if size < 2_000_000:
        shutil.copyfile(page, docs / "report-example.html")
    print(f"report: {page} ({size / 1e6:.2f} MB); figure: {docs / 'report.png'}")
    if args.screenshot:
        shot = work / "report-screenshot.png"
        if screenshot(page, shot):
            shutil.copyfile(shot, docs / "report-screenshot.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
