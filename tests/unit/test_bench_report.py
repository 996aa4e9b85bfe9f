"""scripts/bench_report.py: last-line JSON, the page it writes, failures, on tiny fake benchmarks.

The real benchmarks take minutes and a broker; these fakes are a few lines of Python
written to tmp_path, run by the report's own code.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_report.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


br = _load()

GOOD = '''
import json, sys
print("measure      records/s")
print("(a) fake       1,234")
print(json.dumps({"records_per_s": 1234.5, "ratio_to_one": [1.0, 1.8], "p99_latency_ms": 12.25,
                  "cpu_share": {"1": {"broker": 0.2}}, "crc32c": "C", "args": sys.argv[1:]}))
'''
FAILS = '''
import sys
print("half a table")
print("Traceback: something broke", file=sys.stderr)
sys.exit(3)
'''
NO_JSON = 'print("a table and no JSON line")\n'


def fake(tmp_path: Path, name: str, code: str, quick: tuple[str, ...] = ()) -> object:
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    return br.Bench(name, str(path), f"the fake {name}", quick=quick)


def test_doctests() -> None:
    assert doctest.testmod(br).failed == 0


@pytest.mark.parametrize("text, want", [
    ('table\n{"a": 1}\n', {"a": 1}),
    ('table\n{"a": 1}\n\n  \n', {"a": 1}),  # trailing blank lines
    ('{"a": 1}\nmore table\n', None),  # JSON not last
    ("table\n[1, 2]\n", None),  # not an object
    ("table\n{broken\n", None),
    ("", None),
])
def test_last_json(text: str, want: object) -> None:
    assert br.last_json(text) == want


def test_table_drops_only_the_json_line() -> None:
    assert br.table_of('t1\nt2\n{"a": 1}\n') == "t1\nt2"
    assert br.table_of("t1\nt2\n") == "t1\nt2"


def test_key_figures_pick_rates_ratios_latencies_and_flatten() -> None:
    rows = dict(br.key_figures({"records_per_s": 1234.4, "ratio_to_one": [1.0, 1.8], "p99_latency_ms": 12.25,
                                "cpu_share": {"1": {"broker": 0.2}}, "crc32c": "C", "entities": 100}))
    assert rows == {"records_per_s": "1,234", "ratio_to_one": "1 / 1.8", "p99_latency_ms": "12.25",
                    "cpu_share.1.broker": "0.2"}


def test_quick_options_and_the_shared_broker_reach_the_command(tmp_path: Path) -> None:
    b = br.Bench("x", str(tmp_path / "x.py"), "", quick=("--n", "5"), takes_bootstrap=True)
    assert br.command(b, "py", True, "127.0.0.1:9") == ["py", str(tmp_path / "x.py"), "--n", "5", "--bootstrap", "127.0.0.1:9"]
    assert br.command(b, "py", False, None) == ["py", str(tmp_path / "x.py")]


def test_a_good_run_is_rendered_with_table_and_figures(tmp_path: Path) -> None:
    b = fake(tmp_path, "good", GOOD, quick=("--small",))
    o = br.run_bench(b, br.command(b, sys.executable, True, None), timeout=60)
    assert o.ok and o.returncode == 0 and o.why is None
    assert o.figures is not None and o.figures["args"] == ["--small"]
    assert o.table == "measure      records/s\n(a) fake       1,234"
    page = br.render([o], {"cores": "2"}, quick=True)
    assert page.startswith("# Benchmarks (quick sizes)")
    assert "## good: ok" in page and "(a) fake       1,234" in page
    assert "| `p99_latency_ms` | 12.25 |" in page and "| `ratio_to_one` | 1 / 1.8 |" in page
    assert "| cores | 2 |" in page
    assert '"crc32c": "C"' in page  # the whole JSON line, folded


def test_the_cpu_line_warns_only_when_other_jobs_took_a_share(tmp_path: Path) -> None:
    b = fake(tmp_path, "good", GOOD)
    o = br.run_bench(b, br.command(b, sys.executable, False, None), timeout=60)
    o.seconds = 10.0
    o.cpu = {"benchmark": 9.0, "broker": 1.0, "other": 0.5}
    assert "- CPU: 9.0 s its processes, 1.0 s the broker, 0.5 s other processes (0.05 cores)" in br.render_section(o)
    o.cpu["other"] = 12.0
    assert "(1.20 cores; figures taken while other jobs ran are less trustworthy)" in br.render_section(o)


@pytest.mark.parametrize("code, why", [(FAILS, "exit code 3"), (NO_JSON, "its last line is not a JSON object")],
                         ids=["exits-3", "no-json"])
def test_a_failed_run_is_reported_with_its_stderr(tmp_path: Path, code: str, why: str) -> None:
    b = fake(tmp_path, "bad", code)
    o = br.run_bench(b, br.command(b, sys.executable, False, None), timeout=60)
    assert not o.ok and o.why == why and o.figures is None
    page = br.render([o], {}, quick=False)
    assert "## bad: FAILED" in page and f"**Failed: {why}.**" in page
    assert "(quick sizes)" not in page
    if code is FAILS:
        assert "Traceback: something broke" in page and "half a table" in page


def test_a_timeout_is_a_failure(tmp_path: Path) -> None:
    b = fake(tmp_path, "slow", "import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    o = br.run_bench(b, br.command(b, sys.executable, False, None), timeout=1)
    assert not o.ok and o.why == "timed out after 1 s" and o.returncode is None


def test_main_runs_all_writes_the_page_and_exits_1_when_one_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    benches = (fake(tmp_path, "good", GOOD), fake(tmp_path, "bad", FAILS), fake(tmp_path, "later", GOOD))
    monkeypatch.setattr(br, "BENCHMARKS", benches)
    out = tmp_path / "docs" / "bench.md"
    assert br.main(["--out", str(out)]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["out"] == str(out)
    assert {n: v["ok"] for n, v in last["benchmarks"].items()} == {"good": True, "bad": False, "later": True}
    page = out.read_text()
    assert page.index("## good: ok") < page.index("## bad: FAILED") < page.index("## later: ok")
    assert "| commit |" in page and "| cores |" in page and "| date (UTC) |" in page

    assert br.main(["--out", str(out), "--only", "good", "--quick"]) == 0
    page = out.read_text()
    assert "## bad" not in page and "(quick sizes)" in page
    with pytest.raises(SystemExit, match="unknown benchmark nope"):
        br.main(["--out", str(out), "--only", "good,nope"])
