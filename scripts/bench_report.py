#!/usr/bin/env python
"""Run every benchmark of the project and write one page of their figures, docs/benchmarks.md.

Each benchmark in scripts/ (``BENCHMARKS`` below) runs as its own process, one after
the other, with its defaults (``--quick``: its small-size options); those that take a
broker share one: a LocalBroker started here (``--bootstrap`` to use another), passed as
``--bootstrap``. Every benchmark prints a table and then, last, one JSON line; this
script keeps both and writes a page with:

- a header: the date (UTC), the commit (``git rev-parse --short HEAD``, ``-dirty`` when
  the tree has changes), the core count, the CPU model, Python, TensorFlow, NumPy,
  kafka-python and Kafka versions, and "(quick sizes)" when ``--quick``;
- per benchmark: the command, its wall time, the CPU it used (its process tree), the
  broker's and the rest of the machine's ("other": other jobs, which make its figures
  less trustworthy), its table as a preformatted block, a Markdown table of the key
  figures of its JSON line (ratios, rates, latencies, CPU, memory) and the whole JSON
  line folded below.

A benchmark that exits non-zero, times out or whose last line is not a JSON object is
reported as failed, with the tail of its stderr; the others still run, and this script
exits 1 at the end. Its own last line is one JSON object:
``{"benchmarks": {name: {"ok": bool, "seconds": s}}, "out": path}``.

    scripts/bench_report [--quick] [--only e2e,scaleout] [--out docs/benchmarks.md] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvae.testing.benchtools import machine_busy_s  # noqa: E402  (stdlib only: no TensorFlow, no Kafka)
from streamvae.testing.procs import cpu_seconds  # noqa: E402


@dataclass(frozen=True)
class Bench:
    """One benchmark: ``script`` (relative to the repository root, or absolute), its
    small-size options for ``--quick``, and whether it takes ``--bootstrap``."""

    name: str
    script: str
    about: str
    quick: tuple[str, ...] = ()
    takes_bootstrap: bool = False


BENCHMARKS: tuple[Bench, ...] = (
    Bench("model", "scripts/bench_model.py", "scoring throughput vs this machine's one-thread matmul peak",
          quick=("--seconds", "0.5")),
    Bench("thresholds", "scripts/bench_thresholds.py", "threshold tracker updates/s vs a plain list-append loop; "
          "memory of many entities", quick=("--n", "100000", "--repeat", "1", "--entities", "2000")),
    Bench("retrain", "scripts/bench_retrain.py", "scoring while a retrain runs vs alone; retrain vs a bare "
          "train-step loop", quick=("--seconds", "1", "--windows", "5000", "--epochs", "2")),
    Bench("e2e", "scripts/bench_e2e.py", "Kafka end to end vs offline pipeline vs raw consume vs model only; "
          "latency at 0.5x and 0.9x; CPU per record at 200/s, 2,000/s and full speed",
          quick=("--records", "20000", "--epochs", "3", "--model-seconds", "1", "--latency-seconds", "5",
                 "--latency-warmup", "3", "--cpu-seconds", "5"), takes_bootstrap=True),
    Bench("memory", "scripts/bench_memory.py", "the daemon's resident memory after hostile input vs a clean run",
          quick=("--records", "8000", "--repeats", "1", "--settle", "2", "--epochs", "2"), takes_bootstrap=True),
    Bench("scaleout", "scripts/bench_scaleout.py", "1, 2, 3 daemons of one group on 6 partitions: throughput, "
          "latency, where the cores go", quick=("--records", "20000", "--seconds", "5", "--warmup", "3",
                                                 "--epochs", "3"), takes_bootstrap=True),
)

# JSON keys shown in a benchmark's table of key figures (the whole line is folded below it)
KEY_WORDS = ("ratio", "per_s", "latency", "_ms", "cpu", "mem", "rss", "_mb", "mib", "gflops", "seconds", "_s")
STDERR_TAIL = 40
OTHER_NOTE = 0.25  # cores used by other processes during a benchmark above which its section says so


@dataclass
class Outcome:
    """What one benchmark run left: ``figures`` is its last-line JSON object (None when it failed)."""

    bench: Bench
    cmd: list[str]
    ok: bool
    seconds: float
    returncode: int | None
    table: str
    figures: dict[str, Any] | None
    stderr_tail: str
    why: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------


def last_json(stdout: str) -> dict[str, Any] | None:
    """The JSON object on the last non-empty line of ``stdout``; None if that line is not one.

    >>> last_json('table\\n{"a": 1}\\n\\n')
    {'a': 1}
    >>> last_json('{"a": 1}\\ntable') is None
    True
    """
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def table_of(stdout: str) -> str:
    """``stdout`` without its last (JSON) line."""
    lines = stdout.rstrip("\n").splitlines()
    return "\n".join(lines[:-1]).rstrip() if lines and last_json(lines[-1]) is not None else stdout.rstrip()


def command(bench: Bench, python: str, quick: bool, bootstrap: str | None) -> list[str]:
    script = Path(bench.script) if Path(bench.script).is_absolute() else ROOT / bench.script
    cmd = [python, str(script)]
    if quick:
        cmd += list(bench.quick)
    if bench.takes_bootstrap and bootstrap:
        cmd += ["--bootstrap", bootstrap]
    return cmd


def run_bench(bench: Bench, cmd: list[str], timeout: float, broker_pid: int | None = None) -> Outcome:
    """Run one benchmark to its end; never raises for the benchmark's own failure.

    ``cpu``: seconds of CPU its process tree used (every process it waited for), the
    broker's (``broker_pid``), and the rest of the machine's ("other")."""
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, broker0, t0 = machine_busy_s(), cpu_seconds(broker_pid), time.perf_counter()
    rc: int | None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
        rc, out, err = r.returncode, r.stdout, r.stderr
        why = None if rc == 0 else f"exit code {rc}"
    except subprocess.TimeoutExpired as e:
        rc, why = None, f"timed out after {timeout:g} s"
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    except OSError as e:
        rc, why, out, err = None, f"could not start: {e}", "", ""
    seconds = time.perf_counter() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    broker = cpu_seconds(broker_pid) - broker0 if broker_pid else 0.0
    cpu = {"benchmark": own, "broker": broker, "other": max(0.0, machine_busy_s() - busy0 - own - broker)}
    figures = last_json(out)
    if why is None and figures is None:
        why = "its last line is not a JSON object"
    tail = "\n".join(err.rstrip().splitlines()[-STDERR_TAIL:])
    return Outcome(bench, cmd, why is None, seconds, rc, table_of(out), figures if why is None else None, tail, why, cpu)


# ----------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list) and all(isinstance(x, (int, float, str)) or x is None for x in v):
        return " / ".join(_fmt(x) for x in v)
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(", ", ": "))


def flatten(obj: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted key, value)`` for every leaf of nested dicts; lists stay values."""
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


def key_figures(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures worth a row: keys that name a ratio, a rate, a latency, CPU, memory or
    a time (``KEY_WORDS``), in the benchmark's order, formatted."""
    rows = []
    for key, v in flatten(figures):
        low = key.lower()
        if any(w in low for w in KEY_WORDS) and not isinstance(v, str):
            rows.append((key, _fmt(v)))
    return rows


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_section(o: Outcome) -> str:
    """One benchmark's section of the page."""
    shown = _md_cell(" ".join(o.cmd).replace(str(ROOT) + "/", ""))
    lines = [f"## {o.bench.name}: {'ok' if o.ok else 'FAILED'}", "", o.bench.about, "",
             f"- command: `{shown}`",
             f"- wall time: {o.seconds:,.1f} s"]
    if o.cpu:
        other = o.cpu["other"] / max(o.seconds, 1e-9)
        lines.append(f"- CPU: {o.cpu['benchmark']:,.1f} s its processes, {o.cpu['broker']:,.1f} s the broker, "
                     f"{o.cpu['other']:,.1f} s other processes ({other:.2f} cores"
                     + ("; figures taken while other jobs ran are less trustworthy)" if other > OTHER_NOTE else ")"))
    lines.append("")
    if not o.ok:
        lines += [f"**Failed: {o.why}.** Last lines of its stderr:", "", "```", o.stderr_tail or "(nothing)", "```", ""]
        if o.table:
            lines += ["Its stdout:", "", "```", o.table, "```", ""]
        return "\n".join(lines)
    assert o.figures is not None
    lines += ["```", o.table or "(no table)", "```", ""]
    rows = key_figures(o.figures)
    if rows:
        lines += ["| figure | value |", "|---|---|"] + [f"| `{k}` | {_md_cell(v)} |" for k, v in rows] + [""]
    lines += ["<details><summary>its JSON line</summary>", "", "```json", json.dumps(o.figures), "```", "", "</details>", ""]
    return "\n".join(lines)


def render(outcomes: Sequence[Outcome], info: dict[str, str], quick: bool) -> str:
    """The whole page: header, a summary table, a section per benchmark."""
    title = "# Benchmarks" + (" (quick sizes)" if quick else "")
    head = [title, "",
            "Written by `scripts/bench_report` (scripts/bench_report.py); each figure below is from one run of the "
            "benchmark named, on this machine, with the ratios measured inside that same run.",
            ""]
    if quick:
        head += ["**Quick sizes** (`--quick`): each benchmark ran with its small-size options, to check that "
                 "everything runs; the figures are noisy and not the project's numbers. Run `scripts/bench_report` "
                 "without `--quick` on a quiet machine for those.", ""]
    head += ["| | |", "|---|---|"] + [f"| {k} | {_md_cell(v)} |" for k, v in info.items()] + [""]
    head += ["| benchmark | result | wall time |", "|---|---|---|"]
    head += [f"| [{o.bench.name}](#{o.bench.name}-{'ok' if o.ok else 'failed'}) | {'ok' if o.ok else 'FAILED: ' + _md_cell(o.why or '')} "
             f"| {o.seconds:,.0f} s |" for o in outcomes]
    return "\n".join(head) + "\n\n" + "\n".join(render_section(o) for o in outcomes)


def _version(*dists: str) -> str:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    """``git rev-parse --short HEAD``, with ``-dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def machine_info(started: dt.datetime) -> dict[str, str]:
    kafka = "unknown"
    try:
        from streamvae.testing.broker import broker_module

        kafka = str(broker_module().kafka_version())
    except Exception:  # the page is still worth writing without it
        pass
    return {
        "date (UTC)": started.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "cores": str(os.cpu_count()),
        "CPU": cpu_model(),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?",
        "Python": platform.python_version(),
        "TensorFlow": _version("tensorflow", "tensorflow-cpu"),
        "NumPy": _version("numpy"),
        "kafka-python": _version("kafka-python"),
        "Kafka broker": kafka,
    }


# ----------------------------------------------------------------------------------------


def select(only: str | None, benches: Sequence[Bench]) -> list[Bench]:
    if not only:
        return list(benches)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {b.name: b for b in benches}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"--only: unknown benchmark {', '.join(bad)}; the benchmarks are {', '.join(known)}")
    return [known[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", default=None, help="run these benchmarks (comma-separated: "
                    + ", ".join(b.name for b in BENCHMARKS) + ")")
    ap.add_argument("--quick", action="store_true", help="each benchmark's small-size options (checks that all run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="the page (default docs/benchmarks.md)")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting a LocalBroker")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one benchmark may take (default 3600)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter the benchmarks run with")
    args = ap.parse_args(argv)
    benches = select(args.only, BENCHMARKS)
    info = machine_info(dt.datetime.now(dt.timezone.utc))

    broker = None
    bootstrap = args.bootstrap
    outcomes: list[Outcome] = []
    try:
        for b in benches:
            if b.takes_bootstrap and bootstrap is None:
                from streamvae.testing.broker import use_broker

                print("bench_report: starting a local broker", file=sys.stderr, flush=True)
                bootstrap, broker = use_broker(None)
            cmd = command(b, args.python, args.quick, bootstrap)
            print(f"bench_report: {b.name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            o = run_bench(b, cmd, args.timeout, broker.pid if broker is not None else None)
            print(f"bench_report: {b.name}: {'ok' if o.ok else 'FAILED (' + str(o.why) + ')'} in {o.seconds:.0f} s",
                  file=sys.stderr, flush=True)
            outcomes.append(o)
    finally:
        if broker is not None:
            broker.stop()
    if bootstrap:
        info["Kafka broker"] += f", {'given' if args.bootstrap else 'a LocalBroker the report started'} ($BOOTSTRAP = {bootstrap})"
        for o in outcomes:  # the port changes every run; the page names the broker once, in its header
            o.cmd = [("$BOOTSTRAP" if c == bootstrap else c) for c in o.cmd]
    if args.only:
        info["benchmarks run"] = args.only
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(outcomes, info, args.quick))
    shown = os.path.relpath(out, ROOT) if out.resolve().is_relative_to(ROOT) else str(out)
    print(json.dumps({"benchmarks": {o.bench.name: {"ok": o.ok, "seconds": round(o.seconds, 1)} for o in outcomes},
                      "out": shown}))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
