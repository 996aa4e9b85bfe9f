"""The model registry on a plain directory: add, promote, rollback, prune, and the
``streamvae models`` commands over it. No broker: ``--registry`` never publishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import FEATURE_NAMES, WINDOW
from streamvae.cli import main
from streamvae.errors import ArtifactError
from streamvae.model import artifact
from streamvae.model.detector import VAEDetector
from streamvae.errors import DataError
from streamvae.registry import Registry, RegistryError, is_registry


@pytest.fixture(scope="module")
def source(detector: VAEDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny detector saved once as an artifact (version "src")."""
    return artifact.save(detector, tmp_path_factory.mktemp("src") / "src", version="src")


@pytest.fixture
def reg(source: Path, tmp_path: Path) -> Registry:
    """A registry with v1..v4 added (copies of one artifact, each under its own id), none promoted."""
    r = Registry(tmp_path / "registry")
    for v in ("v1", "v2", "v3", "v4"):
        assert r.add(source, version=v) == v
    return r


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_add_stores_each_version_under_its_own_id(reg: Registry) -> None:
    assert [v.version for v in reg.versions()] == ["v1", "v2", "v3", "v4"]
    assert reg.current() is None and not is_registry(reg.root)
    for v in reg.versions():
        assert v.feature_names == tuple(FEATURE_NAMES) and v.window == WINDOW and v.error is None
        assert v.summary().startswith("n=")
        # the manifest names the version the directory is named after, and checksums still hold
        assert reg.verify(v.version)["version"] == v.version
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(RegistryError, match="already in registry"):
        reg.add(reg.path("v1"), version="v1")


def test_add_a_detector_directly(detector: VAEDetector, tmp_path: Path) -> None:
    r = Registry(tmp_path / "r")
    v = r.add(detector)  # a fresh time-sortable id
    assert r.verify(v)["version"] == v
    assert artifact.load(r.path(v)).version_ == v


def test_promote_writes_current_and_history(reg: Registry) -> None:
    e1 = reg.promote("v1", reason="first")
    assert reg.current() == "v1" and e1["previous"] is None
    assert is_registry(reg.root)
    e2 = reg.promote("v2")
    assert (e2["version"], e2["previous"]) == ("v2", "v1")
    assert (reg.root / "CURRENT").read_text().strip() == "v2"
    assert artifact.resolve(reg.root) == reg.root / "v2"  # the daemon's start-up path
    hist = [json.loads(line) for line in (reg.root / "HISTORY").read_text().splitlines()]
    assert [(h["action"], h["version"], h["previous"], h["reason"]) for h in hist] == [
        ("promote", "v1", None, "first"), ("promote", "v2", "v1", "")]
    assert all(isinstance(h["at"], float) for h in hist)
    assert reg.promote("v2").get("unchanged") is True
    assert len(reg.history()) == 2


def test_rollback_twice_goes_back_two_promotions(reg: Registry) -> None:
    for v in ("v1", "v2", "v3"):
        reg.promote(v)
    assert reg.rollback_target() == "v2"
    assert reg.rollback()["version"] == "v2" and reg.current() == "v2"
    assert reg.rollback()["version"] == "v1" and reg.current() == "v1"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    assert reg.current() == "v1"
    # a promotion after rollbacks is undone by the next rollback
    reg.promote("v4")
    assert reg.rollback()["version"] == "v1"


def test_prune_keeps_newest_current_and_rollback_target(reg: Registry, source: Path) -> None:
    reg.promote("v1")
    reg.promote("v2")  # CURRENT v2, rollback target v1: the two oldest
    for v in ("v5", "v6"):
        reg.add(source, version=v)
    deleted = reg.prune(keep=2)
    assert deleted == ["v3", "v4"]
    assert [v.version for v in reg.versions()] == ["v1", "v2", "v5", "v6"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".trash")]
    assert reg.rollback()["version"] == "v1"  # the target survived
    with pytest.raises(RegistryError, match="keep must be"):
        reg.prune(0)


def test_rejected_candidates_never_push_promoted_versions_out(reg: Registry, source: Path) -> None:
    for v in ("v1", "v2", "v3"):
        reg.promote(v)
    for i in range(5):  # five candidates the gate rejected, added after the last promotion
        reg.add(source, version=f"c{i}")
    reg.prune(keep=2)
    # the newest two promoted (v3 CURRENT, v2 the rollback target) and two never promoted
    kept = {v.version for v in reg.versions()}
    assert len(kept) == 4 and {"v2", "v3"} <= kept and "v1" not in kept


def test_rollback_skips_pruned_versions(reg: Registry) -> None:
    for v in ("v1", "v2", "v3"):
        reg.promote(v)
    shutil.rmtree(reg.path("v2"))  # gone by hand
    assert reg.rollback()["version"] == "v1"


def test_broken_version_cannot_become_current(reg: Registry) -> None:
    reg.promote("v1")
    _flip_byte(reg.path("v2") / "weights.npz")
    with pytest.raises(RegistryError, match="refusing to promote v2: .*checksum mismatch on weights.npz"):
        reg.promote("v2")
    assert reg.current() == "v1" and len(reg.history()) == 1
    with pytest.raises(ArtifactError):
        reg.verify("v2")
    with pytest.raises(RegistryError, match="no version 'v9'"):
        reg.promote("v9")
    with pytest.raises(RegistryError, match="not a version id"):
        reg.path("../v1")


def test_current_is_replaced_atomically(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.promote("v1")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("streamvae.files.os.replace", crash)
    with pytest.raises(DataError, match="disk full"):
        reg.promote("v2")
    monkeypatch.undo()
    # the crash happened before the rename: readers still see the old version whole,
    # no history entry claims a promotion, no temporary file is left behind
    assert (reg.root / "CURRENT").read_text() == "v1\n"
    assert [h["version"] for h in reg.history()] == ["v1"]
    assert sorted(p.name for p in reg.root.iterdir() if p.name.startswith(".")) == [".lock"]


# -- the command line -------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_show_promote_rollback(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(reg.root)
    code, out, _ = _cli(capsys, "promote", "v1", "--registry", root)
    assert code == 0 and "promoted v1 (was None)" in out and "no control event" in out
    code, out, _ = _cli(capsys, "promote", "v3", "--registry", root, "--keep", "1", "--reason", "retrained")
    assert code == 0 and "promoted v3 (was v1)" in out and "pruned v2" in out
    assert [v.version for v in reg.versions()] == ["v1", "v3", "v4"]
    assert reg.history()[-1]["reason"] == "retrained"

    code, out, _ = _cli(capsys, "list", "--registry", root)
    assert code == 0
    lines = {ln.split()[1] if ln[:1] in "*<" else ln.split()[0]: ln for ln in out.splitlines()[1:-1]}
    assert set(lines) == {"v1", "v3", "v4"}
    assert lines["v3"].startswith("*") and lines["v1"].startswith("<") and lines["v4"].startswith(" ")
    assert f"3: {','.join(FEATURE_NAMES)}" in lines["v3"] and "median=" in lines["v3"]

    code, out, _ = _cli(capsys, "show", "v3", "--registry", root)
    shown = json.loads(out)
    assert code == 0 and shown["version"] == "v3" and shown["current"] is True
    assert shown["feature_names"] == FEATURE_NAMES

    code, out, _ = _cli(capsys, "rollback", "--registry", root)
    assert code == 0 and "rolled back to v1 (was v3)" in out and reg.current() == "v1"


def test_cli_errors_are_one_line_exit_2(reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(reg.root)
    _flip_byte(reg.path("v2") / "weights.npz")
    for args, msg in [
        (("promote", "v2", "--registry", root), "refusing to promote v2"),
        (("show", "nope", "--registry", root), "no version 'nope'"),
        (("rollback", "--registry", root), "nothing to roll back to"),
        (("list", "--registry", str(tmp_path / "missing")), "is not a directory"),
        (("list", "--registry", str(reg.path("v1"))), "single model artifact, not a registry"),
    ]:
        code, _, err = _cli(capsys, *args)
        assert code == 2, args
        assert len(err.splitlines()) == 1 and msg in err, err
    assert reg.current() is None
    with pytest.raises(SystemExit) as e:  # --registry or --config is required
        main(["models", "list"])
    assert e.value.code == 2
