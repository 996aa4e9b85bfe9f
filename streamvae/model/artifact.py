"""A model version as one directory; saving is atomic and loading never runs code.

Layout of ``<registry>/<version>/``::

    manifest.json   format, version id, created, feature names, window settings, VAE
                    config, threshold rule and value, training-score summary, fit info
    weights.npz     every variable by name (NumPy arrays; loaded with allow_pickle=False)
    scaler.npz      per-feature mean and scale
    heldout.npy     the held-out training windows' scores (threshold warm start)
    checksum.sha256 sha256 of each file above; verified before anything is read

The network is rebuilt from the JSON config with plain Dense layers, then the weights
are assigned by name: no pickle, no Keras model deserialisation, no Lambda layers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamvae import __version__
from streamvae.core.scaler import Scaler
from streamvae.errors import ArtifactError, ConfigError, NotFittedError

if TYPE_CHECKING:
    from streamvae.model.detector import VAEDetector

# The detector and the network (TensorFlow) are imported by save() and load() alone:
# verify() and read_manifest() serve `streamvae models list | show | promote | rollback`,
# which then start in well under a second instead of ~10 s (TensorFlow's import).

FORMAT = "streamvae-vae/1"
FILES = ("manifest.json", "weights.npz", "scaler.npz", "heldout.npy")
CHECKSUM = "checksum.sha256"


def new_version_id(now: datetime | None = None) -> str:
    """``2026-11-23T07-00-00Z-3f2a``: sortable by time, unique by the suffix."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H-%M-%SZ") + "-" + uuid.uuid4().hex[:4]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(det: "VAEDetector", out: str | Path, version: str | None = None) -> Path:
    """Write ``det`` to the directory ``out`` atomically; return its path.

    Everything is written to a temporary sibling, checksummed, then moved into place
    with one ``os.replace``, so a reader sees the whole version or none of it.
    """
    if det.vae_ is None or det.scaler_ is None:
        raise NotFittedError("cannot save an unfitted VAEDetector; call fit() first")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ArtifactError(f"{out} already exists and is not empty; choose a new --out directory")
    version = version or new_version_id()
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "streamvae": __version__,
            "feature_names": det.names,
            "window": {"size": det.config.window, "stride": det.config.stride, "max_gap": det.config.max_gap,
                       "interval": det.config.interval},
            "config": det.config.to_dict(),
            "threshold": {"rule": "quantile_plus_margin", "q": det.threshold_q, "margin": det.threshold_margin, "value": det.threshold_},
            "constant_seen": None if det.constant_seen_ is None else [bool(v) for v in det.constant_seen_],
            "train_scores": det.train_scores_,
            "fit": {k: v for k, v in det.fit_info_.items() if k != "history"},
            "history": det.fit_info_.get("history", {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        # allow_pickle given (its default) so that mypy does not check the **dict of arrays against it
        np.savez(tmp / "weights.npz", allow_pickle=True, **det.vae_.get_weights())
        np.savez(tmp / "scaler.npz", allow_pickle=True, **det.scaler_.to_arrays())
        np.save(tmp / "heldout.npy", np.asarray(det.heldout_scores_, dtype=np.float64))
        sums = "".join(f"{_sha256(tmp / name)}  {name}\n" for name in FILES)
        (tmp / CHECKSUM).write_text(sums)
        for f in [*(tmp / n for n in FILES), tmp / CHECKSUM]:
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def verify(path: str | Path) -> dict[str, str]:
    """Check every file against checksum.sha256; raise ArtifactError naming the first bad one."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"no model artifact at {p} (not a directory)")
    sums_file = p / CHECKSUM
    if not sums_file.is_file():
        raise ArtifactError(f"{p} is not a streamvae model: {CHECKSUM} is missing")
    expected: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            raise ArtifactError(f"{sums_file} is malformed: {line!r}")
        expected[parts[1]] = parts[0]
    if set(expected) != set(FILES):
        raise ArtifactError(f"{sums_file} lists {sorted(expected)}; a model needs exactly {sorted(FILES)}")
    for name, digest in expected.items():
        f = p / name
        if not f.is_file():
            raise ArtifactError(f"model {p} is incomplete: {name} is missing")
        if _sha256(f) != digest:
            raise ArtifactError(f"model {p} is corrupt or was modified: checksum mismatch on {name}")
    return expected


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a verified artifact."""
    p = Path(path)
    verify(p)
    try:
        manifest: dict[str, Any] = json.loads((p / "manifest.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{p}/manifest.json is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{p} has format {manifest.get('format')!r}; this streamvae reads {FORMAT!r}")
    return manifest


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e


def load(path: str | Path) -> "VAEDetector":
    """Load a verified artifact into a ready-to-score :class:`VAEDetector`."""
    from streamvae.model.detector import VAEDetector
    from streamvae.model.vae import VAE, VAEConfig

    p = Path(path)
    manifest = read_manifest(p)
    try:
        cfg = VAEConfig.from_dict(manifest["config"])
        thr = manifest["threshold"]
        det = VAEDetector(cfg, manifest["feature_names"], thr["q"], thr["margin"])
    except (KeyError, TypeError, ConfigError) as e:
        raise ArtifactError(f"{p}/manifest.json is incomplete or invalid: {e}") from e
    scaler = _npz(p / "scaler.npz")
    det.scaler_ = Scaler.from_arrays(scaler["mean"], scaler["scale"])
    det.vae_ = VAE(cfg)
    try:
        det.vae_.set_weights(_npz(p / "weights.npz"))
    except ValueError as e:
        raise ArtifactError(f"{p}/weights.npz does not fit the architecture in the manifest: {e}") from e
    try:
        det.heldout_scores_ = np.load(p / "heldout.npy", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ArtifactError(f"cannot read {p}/heldout.npy: {e}") from e
    det.threshold_ = thr["value"]
    seen = manifest.get("constant_seen")  # absent in artifacts from before it existed
    det.constant_seen_ = None if seen is None else np.asarray(seen, dtype=bool)
    det.train_scores_ = manifest.get("train_scores", {})
    det.fit_info_ = dict(manifest.get("fit", {}))
    det.version_ = manifest["version"]
    return det


def resolve(path: str | Path) -> Path:
    """An artifact directory, or a registry directory whose ``CURRENT`` file names one."""
    p = Path(path)
    cur = p / "CURRENT"
    if cur.is_file():
        name = cur.read_text().strip()
        if not name or "/" in name or name.startswith("."):
            raise ArtifactError(f"{cur} does not name a version: {name!r}")
        return p / name
    return p
