"""A registry of model versions: one artifact directory per version and a CURRENT pointer.

Layout of a registry directory (a shared volume every daemon reads)::

    <root>/<version>/   one artifact (streamvae.model.artifact), named by its version id
    <root>/CURRENT      the version the daemons serve; replaced atomically (tmp + os.replace)
    <root>/HISTORY      one JSON line per promotion or rollback (append-only)
    <root>/.lock        advisory lock: one writer at a time (retrain job vs operator)

Promotion verifies the version's checksums first, so a broken version never becomes
CURRENT. ``rollback()`` returns to the version that was CURRENT before the last
promotion still in force; a second rollback goes one step further back. The history is
a stack rebuilt from HISTORY: a promotion pushes the version it replaced, a rollback pops.

``streamvae.model.artifact`` is imported inside the methods that need it; it imports
TensorFlow (about 8 s on the 2-core dev machine) only to load or save a model, and
``list`` / ``show`` / ``promote`` / ``rollback`` only read JSON and checksums.

Examples
--------
>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> reg.current() is None, reg.versions()
(True, [])
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from streamvae.files import write_atomic
from streamvae.errors import ArtifactError, StreamvaeError

if TYPE_CHECKING:
    from streamvae.model.detector import VAEDetector

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
HISTORY = "HISTORY"
LOCK = ".lock"


class RegistryError(StreamvaeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, ...)."""


def is_registry(path: str | Path) -> bool:
    """True when ``path`` is a registry directory (it has a CURRENT pointer or a HISTORY)."""
    p = Path(path)
    return p.is_dir() and ((p / CURRENT).is_file() or (p / HISTORY).is_file())


def _check_name(version: str) -> str:
    if not isinstance(version, str) or not version or "/" in version or "\\" in version or version.startswith(".") \
            or version in (CURRENT, HISTORY) or version != version.strip():
        raise RegistryError(f"{version!r} is not a version id; use one from `streamvae models list`")
    return version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version as ``list`` shows it, read from its manifest (no checksum pass)."""

    version: str
    created: str
    feature_names: tuple[str, ...]
    window: int | None
    train_scores: dict[str, Any]
    error: str | None = None  # the manifest could not be read: the version is broken

    def summary(self) -> str:
        """The held-out training scores as ``n, median, 99th percentile``; '-' when unknown."""
        held = self.train_scores.get("heldout") or self.train_scores.get("all") or {}
        med, p99 = held.get("q500"), held.get("q990")
        if not isinstance(med, (int, float)) or not isinstance(p99, (int, float)):
            return "-"
        return f"n={held.get('n', '?')} median={med:.4g} p99={p99:.4g}"


class Registry:
    """Model versions under ``root``; every write is atomic and serialised by a lock file.

    Parameters
    ----------
    root : the registry directory (created on the first :meth:`add`).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------
    def path(self, version: str) -> Path:
        """The directory of ``version``; RegistryError if it is not in the registry."""
        p = self.root / _check_name(version)
        if not p.is_dir():
            raise RegistryError(f"no version {version!r} in registry {self.root}; see `streamvae models list`")
        return p

    def current(self) -> str | None:
        """The version CURRENT names, or None before the first promotion."""
        try:
            name = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        return _check_name(name) if name else None

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version`` as stored (use :meth:`verify` to check its files)."""
        p = self.path(version) / "manifest.json"
        try:
            out: dict[str, Any] = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise RegistryError(f"cannot read {p}: {e}") from e
        return out

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first (by creation time, then id)."""
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if not d.is_dir() or d.name.startswith("."):
                continue
            try:
                m = json.loads((d / "manifest.json").read_text())
                out.append(VersionInfo(d.name, str(m.get("created", "")), tuple(m.get("feature_names", ())),
                                       (m.get("window") or {}).get("size"), dict(m.get("train_scores") or {})))
            except (OSError, ValueError, AttributeError, TypeError) as e:
                out.append(VersionInfo(d.name, "", (), None, {}, error=f"unreadable manifest: {e}"))
        return sorted(out, key=lambda v: (v.created, v.version))

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first."""
        try:
            lines = (self.root / HISTORY).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:  # a torn last line after a crash: skip it, keep the rest
                log.warning("%s line %d is not JSON; skipped", self.root / HISTORY, n)
        return out

    def _stack(self) -> list[str]:
        """Versions a rollback can return to, the next one last."""
        stack: list[str] = []
        for h in self.history():
            if h.get("action") == "rollback":
                while stack and stack.pop() != h.get("version"):
                    pass
            elif h.get("previous"):
                stack.append(str(h["previous"]))
        return stack

    def rollback_target(self) -> str | None:
        """The version :meth:`rollback` would make CURRENT (the newest one still present)."""
        for v in reversed(self._stack()):
            if (self.root / v).is_dir() and v != self.current():
                return v
        return None

    def verify(self, version: str) -> dict[str, Any]:
        """Check every file of ``version`` against its checksums; its manifest, or ArtifactError."""
        from streamvae.model import artifact  # TensorFlow-free until a model is loaded or saved

        m = artifact.read_manifest(self.path(version))
        if m.get("version") != version:
            raise ArtifactError(f"{self.root / version} holds version {m.get('version')!r} under the name {version!r}; "
                                "add it again with `Registry.add`")
        return m

    # -- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def add(self, source: "VAEDetector | str | Path", version: str | None = None) -> str:
        """Store a fitted detector, or copy an artifact directory, as a new version; its id.

        The version appears whole or not at all: it is written to a hidden temporary
        directory and moved into place with one ``os.replace``. An artifact copied under
        a new id gets that id in its manifest (and fresh checksums), so the directory
        name and the version the daemon reports always agree. Adding does not promote.
        """
        from streamvae.model import artifact  # TensorFlow-free until a model is loaded or saved

        with self._locked():
            if isinstance(source, (str, Path)):
                src = Path(source)
                manifest = artifact.read_manifest(src)  # verifies the source's checksums
                version = _check_name(version or str(manifest["version"]))
                dest = self.root / version
                if dest.exists():
                    raise RegistryError(f"version {version!r} is already in registry {self.root}; choose another id")
                tmp = self.root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
                try:
                    shutil.copytree(src, tmp)
                    if manifest["version"] != version:
                        manifest["version"] = version
                        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
                        sums = "".join(f"{artifact._sha256(tmp / n)}  {n}\n" for n in artifact.FILES)
                        (tmp / artifact.CHECKSUM).write_text(sums)
                    artifact.verify(tmp)
                    os.replace(tmp, dest)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            else:
                version = _check_name(version or source.version_ or artifact.new_version_id())
                dest = self.root / version
                if dest.exists():
                    raise RegistryError(f"version {version!r} is already in registry {self.root}; choose another id")
                artifact.save(source, dest, version=version)
            _fsync_dir(self.root)
        log.info("added model version %s to registry %s", version, self.root)
        return version

    def _write_current(self, version: str) -> None:
        """Readers see the old name or the new one, never a partial file."""
        write_atomic(self.root / CURRENT, (version + "\n").encode(), fsync=True)
        _fsync_dir(self.root)

    def _append_history(self, entry: dict[str, Any]) -> None:
        with (self.root / HISTORY).open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def promote(self, version: str, reason: str = "") -> dict[str, Any]:
        """Make ``version`` CURRENT after verifying it; the history entry (the control event's body).

        A version whose files do not match their checksums raises RegistryError and
        CURRENT is left as it was. Promoting the version already CURRENT changes nothing
        and returns its last entry with ``"unchanged": True``.
        """
        with self._locked():
            try:
                self.verify(version)
            except ArtifactError as e:
                raise RegistryError(f"refusing to promote {version}: {e}") from e
            previous = self.current()
            if previous == version:
                return {"action": "promote", "version": version, "previous": previous, "at": time.time(),
                        "reason": reason, "unchanged": True}
            entry = {"action": "promote", "version": version, "previous": previous, "at": time.time(), "reason": reason}
            self._write_current(version)
            self._append_history(entry)
        log.info("promoted model version %s (was %s)%s", version, previous, f": {reason}" if reason else "")
        return entry

    def rollback(self, reason: str = "") -> dict[str, Any]:
        """Make the version CURRENT before the last promotion CURRENT again; the history entry.

        The target is verified like a promotion. Versions pruned since are skipped (the
        newest one still present is used); with none left it is a RegistryError.
        """
        with self._locked():
            target = self.rollback_target()
            current = self.current()
            if target is None:
                raise RegistryError(f"nothing to roll back to in registry {self.root}: no earlier version is recorded in "
                                    f"{HISTORY} (or all were pruned); promote one with `streamvae models promote VERSION`")
            try:
                self.verify(target)
            except ArtifactError as e:
                raise RegistryError(f"refusing to roll back to {target}: {e}") from e
            entry = {"action": "rollback", "version": target, "previous": current, "at": time.time(), "reason": reason}
            self._write_current(target)
            self._append_history(entry)
        log.info("rolled back to model version %s (was %s)", target, current)
        return entry

    def prune(self, keep: int) -> list[str]:
        """Keep the newest ``keep`` versions that were ever promoted and the newest ``keep``
        that never were (candidates the gate rejected, kept for inspection), delete the
        rest; CURRENT and the rollback target are always kept. Counted apart so that a
        run of rejected candidates never pushes the promoted history out. Returns the
        versions deleted, oldest first."""
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise RegistryError(f"keep must be an int >= 1; got {keep!r}")
        deleted = []
        with self._locked():
            versions = [v.version for v in self.versions()]
            promoted = {h.get("version") for h in self.history()}
            was = [v for v in versions if v in promoted]
            never = [v for v in versions if v not in promoted]
            protect = set(was[-keep:]) | set(never[-keep:]) | {self.current(), self.rollback_target()}
            for v in versions:
                if v in protect:
                    continue
                # Renamed first so no reader ever sees a half-deleted version under its name.
                trash = self.root / f".trash-{v}-{uuid.uuid4().hex[:8]}"
                os.replace(self.root / v, trash)
                shutil.rmtree(trash, ignore_errors=True)
                deleted.append(v)
        if deleted:
            log.info("pruned %d model version(s) from %s: %s", len(deleted), self.root, ", ".join(deleted))
        return deleted
