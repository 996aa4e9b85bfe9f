"""Types as a habit: ``mypy --strict streamvae`` reports no error, checked by the test suite
(``scripts/test``) so a type error fails the build like any other regression."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_reports_no_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "streamvae"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mypy --strict streamvae failed:\n{proc.stdout}{proc.stderr}"
