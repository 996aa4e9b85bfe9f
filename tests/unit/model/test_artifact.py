"""Model artifacts: a save/load round trip scores identically; loading verifies every
file and never unpickles."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers import FEATURE_NAMES, WINDOW
from streamvae.errors import ArtifactError, NotFittedError
from streamvae.model import artifact
from streamvae.model.detector import VAEDetector
from streamvae.model.vae import VAEConfig


@pytest.fixture(scope="module")
def saved(detector: VAEDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session detector saved once; tests copy it before damaging it."""
    return artifact.save(detector, tmp_path_factory.mktemp("artifacts") / "v1", version="v1")


@pytest.fixture
def copy_of(saved: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "copy"))


def _rewrite_checksums(path: Path) -> None:
    """Make checksum.sha256 agree with the files as they are now (an attacker's fix-up)."""
    sums = "".join(f"{artifact._sha256(path / n)}  {n}\n" for n in artifact.FILES)
    (path / artifact.CHECKSUM).write_text(sums)


def test_round_trip_scores_identically(detector: VAEDetector, saved: Path, heldout_windows: np.ndarray) -> None:
    x = heldout_windows[:100].copy()
    x[3, 5, 1] += 2.0
    x[7, :, 2] = np.nan
    loaded = artifact.load(saved)
    a, b = detector.score(x), loaded.score(x)
    np.testing.assert_allclose(b.score, a.score, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.shares, a.shares, rtol=1e-6, atol=1e-7)
    assert loaded.threshold_ == detector.threshold_
    assert loaded.names == FEATURE_NAMES
    assert loaded.config == detector.config
    assert loaded.version_ == "v1"
    np.testing.assert_array_equal(loaded.heldout_scores_, detector.heldout_scores_)
    assert loaded.constant_seen_ is not None and detector.constant_seen_ is not None
    np.testing.assert_array_equal(loaded.constant_seen_, detector.constant_seen_)
    np.testing.assert_array_equal(loaded.feature_varies(), detector.feature_varies())
    np.testing.assert_array_equal(loaded.scaler_.mean_, detector.scaler_.mean_)
    np.testing.assert_array_equal(loaded.predict(x), detector.predict(x))


def test_manifest_contents(detector: VAEDetector, saved: Path) -> None:
    m = artifact.read_manifest(saved)
    assert m["format"] == artifact.FORMAT
    assert m["version"] == "v1"
    assert m["feature_names"] == FEATURE_NAMES
    assert m["window"] == {"size": WINDOW, "stride": 1, "max_gap": None, "interval": None}
    assert VAEConfig.from_dict(m["config"]) == detector.config
    assert m["threshold"]["value"] == detector.threshold_
    assert m["threshold"]["q"] == detector.threshold_q
    assert m["train_scores"]["heldout"]["n"] == len(detector.heldout_scores_)
    assert m["train_scores"]["all"]["q990"] == pytest.approx(detector.train_scores_["all"]["q990"])
    assert sorted(p.name for p in saved.iterdir()) == sorted([*artifact.FILES, artifact.CHECKSUM])


def test_save_is_atomic_and_leaves_no_temporaries(detector: VAEDetector, artifact_dir: Callable[[str], Path]) -> None:
    out = artifact_dir("m")
    out.mkdir()  # an existing EMPTY directory is fine
    artifact.save(detector, out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    artifact.verify(out)


def test_tampered_weights_fail_the_checksum(copy_of: Path) -> None:
    f = copy_of / "weights.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum.*weights.npz"):
        artifact.load(copy_of)


@pytest.mark.parametrize("name", [*artifact.FILES, artifact.CHECKSUM])
def test_missing_file(copy_of: Path, name: str) -> None:
    (copy_of / name).unlink()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        artifact.load(copy_of)


class _Trap:
    """Unpickling this creates a marker file: proof that pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_refused(copy_of: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    real = dict(np.load(copy_of / "weights.npz"))
    key = sorted(real)[0]
    weights = {**real, key: np.array([_Trap(marker)], dtype=object)}
    np.savez(copy_of / "weights.npz", **weights)  # allow_pickle: object arrays are pickled
    _rewrite_checksums(copy_of)
    artifact.verify(copy_of)  # the checksum passes ...
    # ... and the file really would run code if loaded with pickle
    assert pickle.loads(pickle.dumps(_Trap(tmp_path / "control"))) is None
    assert (tmp_path / "control").exists()

    with pytest.raises(ArtifactError, match="weights.npz"):
        artifact.load(copy_of)
    assert not marker.exists()


def test_pickled_heldout_is_refused(copy_of: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    np.save(copy_of / "heldout.npy", np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    _rewrite_checksums(copy_of)
    with pytest.raises(ArtifactError, match="heldout.npy"):
        artifact.load(copy_of)
    assert not marker.exists()


def test_weights_for_another_architecture_are_refused(copy_of: Path) -> None:
    real = dict(np.load(copy_of / "weights.npz"))
    key = sorted(real)[0]
    real[key] = np.zeros(tuple(s + 1 for s in real[key].shape), np.float32)
    buf = io.BytesIO()
    np.savez(buf, **real)
    (copy_of / "weights.npz").write_bytes(buf.getvalue())
    _rewrite_checksums(copy_of)
    with pytest.raises(ArtifactError, match="architecture"):
        artifact.load(copy_of)


def test_unknown_format_is_refused(copy_of: Path) -> None:
    m = json.loads((copy_of / "manifest.json").read_text())
    m["format"] = "streamvae-vae/999"
    (copy_of / "manifest.json").write_text(json.dumps(m))
    _rewrite_checksums(copy_of)
    with pytest.raises(ArtifactError, match="format"):
        artifact.load(copy_of)


def test_save_into_non_empty_dir_is_refused(detector: VAEDetector, artifact_dir: Callable[[str], Path]) -> None:
    out = artifact_dir("busy")
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not empty"):
        artifact.save(detector, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_save_unfitted_is_refused(artifact_dir: Callable[[str], Path]) -> None:
    with pytest.raises(NotFittedError):
        artifact.save(VAEDetector(VAEConfig(window=8, n_features=3)), artifact_dir("m"))


def test_load_of_a_non_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.txt"
    f.write_text("not a model")
    with pytest.raises(ArtifactError, match="not a directory"):
        artifact.load(f)
    with pytest.raises(ArtifactError, match="not a directory"):
        artifact.load(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="checksum"):
        artifact.load(tmp_path)  # a directory, but not a model
