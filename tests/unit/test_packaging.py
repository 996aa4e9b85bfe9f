"""The first install prints no packaging warnings (issue 18, item 7).

pip (26) shows every Python warning the build backend raises, so a setuptools complaint
about pyproject.toml reaches whoever runs ``scripts/setup``. Both builds run on a copy of
the project with ``--no-build-isolation``: the backend is the one ``scripts/setup`` puts in
.venv, and no index is needed. About 4 s each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # without this checkout's compiled extension: the install under test builds its own
    shutil.copytree(ROOT / "streamvae", src / "streamvae", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    return src


def _has_compiler() -> bool:
    """Whether setuptools finds the C compiler it would build the optional extension with."""
    return shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is not None


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # the project's warnings only, not this machine's pip settings
    return subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-build-isolation", "--no-index",
                           "--no-cache-dir", "--disable-pip-version-check"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_build_backend_in_venv_is_the_one_pyproject_names() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for r in map(Requirement, requires):
        have = version(r.name)
        assert r.specifier.contains(have), f"{r.name} {have} in this venv; pyproject.toml needs {r}: run scripts/setup"


@pytest.mark.parametrize("how", ["editable", "wheel"])
def test_install_prints_no_warning(tmp_path: Path, how: str) -> None:
    """``editable``: scripts/setup's ``pip install -e``; ``wheel``: the Dockerfile's ``pip wheel .``."""
    src = _copy(tmp_path)
    if how == "editable":
        p = _pip("install", "-e", str(src), "--target", str(tmp_path / "site"), cwd=src)
    else:
        p = _pip("wheel", "-w", str(tmp_path / "wheels"), str(src), cwd=src)
    out = (p.stdout + p.stderr).replace(str(tmp_path), "TMP")  # (this test's name holds "warning")
    assert p.returncode == 0, out
    assert not re.search(r"warn", out, re.IGNORECASE), out
    if how == "editable":  # and it works: the .pth names the copy, whose package imports
        (pth,) = (tmp_path / "site").glob("__editable__.streamvae-*.pth")
        assert pth.read_text().split() == [str(src.resolve())]
        if _has_compiler():  # the C extensions, compiled in place, next to their modules
            p = subprocess.run([sys.executable, "-c", "import streamvae.model._tail as t, streamvae.kafka._records, "
                                "streamvae.core._jsonrecord; print(t.isa)"], cwd=src,
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0 and p.stdout.strip(), p.stdout + p.stderr
    else:  # and only the package goes in it, not tests/ or scripts/ (nor setup.py)
        (whl,) = (tmp_path / "wheels").glob("streamvae-*.whl")
        name, ver = whl.name.split("-")[:2]
        with zipfile.ZipFile(whl) as z:
            assert {n.split("/")[0] for n in z.namelist()} == {"streamvae", f"{name}-{ver}.dist-info"}
            if _has_compiler():
                for ext in ("streamvae/model/_tail.", "streamvae/kafka/_records.", "streamvae/core/_jsonrecord."):
                    assert any(n.startswith(ext) and n.endswith(".so") for n in z.namelist()), (ext, z.namelist())
