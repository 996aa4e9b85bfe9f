"""deploy/docker/Dockerfile, checked without a Docker engine: its instructions parsed,
stage by stage (multi-stage, non-root, the package installed from its wheel, no secrets)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "deploy" / "docker"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comment lines dropped (as
    Docker drops them, also inside a continued instruction)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"unterminated continuation: {pending!r}"
    return out


def stages(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name, its instructions)], the instructions before the first FROM dropped."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for ins, args in instructions(text):
        if ins == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"FROM {args}"
            out.append((m.group(2) or str(len(out)), []))
        elif out:
            out[-1][1].append((ins, args))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = "FROM a AS b\n# c\nRUN x \\\n  # inside\n  && y\nUSER 1\n"
    assert stages(text) == [("b", [("RUN", "x && y"), ("USER", "1")])]


def test_two_stages_build_a_wheel_then_install_only_it(dockerfile: str) -> None:
    st = dict(stages(dockerfile))
    assert list(st) == ["build", "runtime"]
    build = " ".join(a for i, a in st["build"] if i == "RUN")
    assert "pip wheel" in build and "--wheel-dir /wheels" in build
    runs = [a for i, a in st["runtime"] if i == "RUN"]
    install = next(a for a in runs if "pip install" in a)
    # from the build stage's wheels, nothing from an index, and no source tree copied in
    assert "from=build" in install and "--no-index" in install and "--find-links /wheels" in install
    assert re.search(r"--find-links /wheels streamvae\b", install)
    assert not [a for i, a in st["runtime"] if i == "COPY" and "streamvae" in a.split()[0]]


def test_the_runtime_runs_as_a_numeric_non_root_user(dockerfile: str) -> None:
    runtime = stages(dockerfile)[-1][1]
    users = [a for i, a in runtime if i == "USER"]
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: Kubernetes' runAsNonRoot can check it
    after_user = runtime[runtime.index(("USER", users[-1])):]
    assert not [a for i, a in after_user if i == "RUN"], "nothing runs as root after USER ... except the container"


def test_no_add_and_no_secret_copied(dockerfile: str) -> None:
    ins = instructions(dockerfile)
    assert not [a for i, a in ins if i == "ADD"], "COPY, not ADD (no remote URLs, no auto-extracted archives)"
    copied = " ".join(a for i, a in ins if i == "COPY")
    for bad in (".env", ".pem", ".key", "secret", "password", ".netrc", "id_rsa", ".venv"):
        assert bad not in copied.lower()
    env = " ".join(a for i, a in ins if i in ("ENV", "ARG"))
    assert "PASSWORD" not in env.upper()


def test_entrypoint_command_and_healthcheck(dockerfile: str) -> None:
    ins = dict(instructions(dockerfile))  # the last of each kind
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(ins["ENTRYPOINT"]) == ["streamvae"] and "streamvae" in scripts
    assert json.loads(ins["CMD"]) == ["run", "--config", "/etc/streamvae/streamvae.toml"]
    env = dict(kv.split("=", 1) for kv in shlex.split(ins["ENV"]))
    port = env["STREAMVAE_HTTP__PORT"]
    assert ins["EXPOSE"] == port
    health = ins["HEALTHCHECK"]
    assert "/healthz" in health and "STREAMVAE_HTTP__PORT" in health and f"'{port}'" in health
    cmd = json.loads(health.split("CMD", 1)[1])  # exec form: no shell needed in the image
    assert cmd[:2] == ["python", "-c"]
    compile(cmd[2], "HEALTHCHECK", "exec")


def test_every_copied_path_exists_and_passes_the_dockerignore(dockerfile: str) -> None:
    rules = [r.strip() for r in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]

    def sent(path: str) -> bool:  # the last matching rule wins, as in Docker
        keep = True
        for r in rules:
            neg = r.startswith("!")
            pat = r[1:].rstrip("/") if neg else r
            if fnmatch.fnmatch(path, pat):
                keep = neg
        return keep

    build = dict(stages(dockerfile))["build"]
    for _, args in (x for x in build if x[0] == "COPY"):
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert sent(src.rstrip("/")), f"{src} is excluded by Dockerfile.dockerignore"
    assert not sent(".venv") and not sent("tests")


def test_the_build_stage_compiles_the_scorers_c_tail(dockerfile: str) -> None:
    # setup.py declares the extension (optional: without it or gcc the wheel still builds,
    # silently without the tail), so the build stage needs both; the runtime checks it loads
    build = dict(stages(dockerfile))["build"]
    copied = " ".join(a for i, a in build if i == "COPY").split()
    assert "setup.py" in copied and (ROOT / "setup.py").exists()
    assert "gcc" in " ".join(a for i, a in build if i == "RUN")
    runtime = " ".join(a for i, a in stages(dockerfile)[-1][1] if i == "RUN")
    assert "import streamvae.model._tail" in runtime
