"""Imports point inward (STYLE.md): every import edge of streamvae/ is checked with ast,
including imports inside functions and under ``if TYPE_CHECKING``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "streamvae"
LEAF = {"streamvae"}  # the package root: __version__ only, imports nothing
# layer -> streamvae layers it may import (besides itself) and third-party top-level packages
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    "errors": (set(), set()),
    "config": ({"errors", "configrules"}, set()),  # config raises ConfigError; all three stay stdlib-only
    "configrules": ({"errors"}, set()),
    "files": ({"errors"}, set()),  # atomic file writes: stdlib only, usable from every layer
    "core": ({"errors", "config", "files"}, {"numpy", "river"}),
    "model": ({"core", "errors", "config", "files"} | LEAF, {"numpy", "tensorflow", "keras", "threadpoolctl"}),
    "registry": ({"model", "core", "errors", "config", "files"} | LEAF, {"numpy"}),
    # what to learn and when; TensorFlow only through model/, and only where a candidate is trained
    "lifecycle": ({"model", "registry", "core", "errors", "config", "files"} | LEAF, {"numpy", "river"}),
    "kafka": ({"errors", "config", "files"} | LEAF, {"kafka", "orjson", "crc32c"}),
    "offline": ({"lifecycle", "core", "model", "registry", "errors", "config", "files"} | LEAF,
                {"numpy", "matplotlib", "orjson"}),
    "service": ({"lifecycle", "core", "model", "registry", "kafka", "offline", "errors", "config", "files"} | LEAF,
                {"numpy", "prometheus_client"}),  # STYLE.md: service -> everything; /metrics by the standard client
    "cli": ({"offline", "service", "errors", "config"} | LEAF, set()),
    # helpers for the integration tests, the demo and the benchmarks (as numpy.testing):
    # everything but the running daemon (service, cli); no other layer imports it
    "testing": ({"lifecycle", "core", "model", "registry", "kafka", "offline", "errors", "config", "files"} | LEAF,
                {"numpy", "kafka", "hypothesis"}),  # hypothesis: the bad-input corpus's property-based records
    "__main__": ({"cli"}, set()),
    "__init__": (set(), set()),
}


def _layer(parts: tuple[str, ...]) -> str:
    """'streamvae.core.windows' -> 'core'; 'streamvae' -> 'streamvae'."""
    return parts[1] if len(parts) > 1 else "streamvae"


def _edges(path: Path, pkg: Path = PKG) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, at any depth."""
    rel = path.relative_to(pkg.parent).with_suffix("").parts
    package = rel if path.name == "__init__.py" else rel[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = ".".join(package[: len(package) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
                out += [(node.lineno, mod if node.module else f"{mod}.{a.name}") for a in node.names]
            elif node.module != "__future__":
                out.append((node.lineno, node.module or ""))
    return out


def violations(pkg: Path) -> list[str]:
    """Every import edge under ``pkg`` that the layer rules above do not allow."""
    bad = []
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg.parent)
        src = _layer(rel.with_suffix("").parts)
        if src not in ALLOWED:
            bad.append(f"{rel}: unknown layer {src!r}; add it to ALLOWED in {Path(__file__).name}")
            continue
        layers, third_party = ALLOWED[src]
        for line, mod in _edges(f, pkg):
            top = mod.split(".")[0]
            if top == "streamvae":
                dst = _layer(tuple(mod.split(".")))
                # only cli imports service (service's own modules import each other); only
                # testing itself imports testing
                if dst == "service":
                    ok = src in ("cli", "service")
                elif dst == "testing":
                    ok = src == "testing"
                else:
                    ok = dst == src or dst in layers
            elif top in ("tensorflow", "keras"):
                ok = src == "model"  # the only package that imports TensorFlow / Keras
            else:
                ok = top in sys.stdlib_module_names or top in third_party
            if not ok:
                bad.append(f"{rel}:{line}: {src} -> {mod}")
    return bad


def test_imports_point_inward() -> None:
    assert len(list(PKG.rglob("*.py"))) >= 10
    bad = violations(PKG)
    assert not bad, "import edges that point outward (see STYLE.md, Imports point inward):\n  " + "\n  ".join(bad)


def test_the_checker_catches_bad_edges(tmp_path: Path) -> None:
    pkg = tmp_path / "streamvae"
    (pkg / "core").mkdir(parents=True)
    (pkg / "offline").mkdir()
    (pkg / "errors.py").write_text("import json\n")
    (pkg / "core" / "ok.py").write_text("import numpy as np\nfrom streamvae.errors import DataError\n")
    (pkg / "core" / "bad.py").write_text("def f():\n    import tensorflow as tf\n    from ..model import vae\n")
    (pkg / "offline" / "cmd.py").write_text("if True:\n    from streamvae.cli import _x\n    import streamvae.service.daemon\n"
                                           "from streamvae.testing import truth\n")
    assert violations(pkg) == [
        "streamvae/core/bad.py:2: core -> tensorflow",
        "streamvae/core/bad.py:3: core -> streamvae.model",
        "streamvae/offline/cmd.py:4: offline -> streamvae.testing",  # ast.walk: the module level first
        "streamvae/offline/cmd.py:2: offline -> streamvae.cli",
        "streamvae/offline/cmd.py:3: offline -> streamvae.service.daemon",
    ]


def test_the_checker_sees_function_level_imports() -> None:
    mods = {m for _, m in _edges(PKG / "offline" / "commands.py")}
    assert "streamvae.model" in mods and "streamvae.offline.plots" in mods  # both only inside functions
