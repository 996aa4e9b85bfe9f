"""The daemon's learned state, saved with the source positions it is as of.

A checkpoint holds what the pipeline learned (thresholds, accepted baselines, episodes),
what the retraining lifecycle holds (buffers, trigger) and, per partition, the position
to read from and how far scoring got when it was taken. It is taken only between
batches whose delivery is confirmed, so it never contains a batch that was not
delivered; the offsets are committed after it (with this checkpoint's ``lineage`` in
the commit metadata). After a restart the daemon reads each partition from the
checkpoint's position, rebuilds the windows up to its ``scored_to``, and scores the
records between that and the committed ``scored_to`` again WITHOUT emitting anything:
they were delivered before the crash, and the state learns them exactly once, whether the
process died before the commit, between the commit and the next checkpoint, or after.

The same checkpoint, kept in memory, is what the daemon goes back to when a delivery
fails: the state returns to it and the partitions are read again from its positions.

One ``.npz`` (``allow_pickle=False``), written atomically and flushed to disk: JSON
for the pipeline's state and the positions, arrays for the lifecycle's buffers. A file
written by an older version (the thresholds as JSON) is still read.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.files import write_atomic

log = logging.getLogger(__name__)

FORMAT = "streamvae-checkpoint/1"
Positions = dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> (read from, scored up to)


@dataclass
class Checkpoint:
    """One saved state (see the module doc); ``positions`` keyed by (topic, partition)."""

    lineage: str
    seq: int
    model_version: str
    positions: Positions
    pipeline_json: str  # the pipeline's state as JSON text: a copy nothing can change
    pipeline_arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # ... and its arrays
    lifecycle: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    @property
    def pipeline(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.pipeline_json)
        if self.pipeline_arrays:
            out["arrays"] = dict(self.pipeline_arrays)
        return out

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "lineage": self.lineage, "seq": self.seq, "model_version": self.model_version,
                "positions": [[t, p, a, b] for (t, p), (a, b) in sorted(self.positions.items())]}
        arrays: dict[str, npt.NDArray[Any]] = {"meta": np.asarray(json.dumps(meta)),
                                               "pipeline": np.asarray(self.pipeline_json)}
        arrays.update({f"pipeline/{k}": v for k, v in self.pipeline_arrays.items()})
        arrays.update({f"lifecycle/{k}": v for k, v in self.lifecycle.items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: str | Path) -> "Checkpoint":
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read the checkpoint {p}: {e.strerror or e}") from e
        if raw[:1] == b"{":  # an older version's threshold state (JSON)
            try:
                old = json.loads(raw)
                return cls("legacy", 0, str(old["model_version"]), {},
                           json.dumps({"bank": old["bank"], "baselines": old.get("baselines", {})}))
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{p} is not a streamvae threshold state: {e}") from e
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            meta = json.loads(str(d["meta"]))
            if meta.get("format") != FORMAT:
                raise DataError(f"{p} is not a streamvae checkpoint ({FORMAT})")
            return cls(str(meta["lineage"]), int(meta["seq"]), str(meta["model_version"]),
                       {(str(t), int(q)): (int(a), int(b)) for t, q, a, b in meta["positions"]},
                       str(d["pipeline"]),
                       {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("pipeline/")},
                       {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("lifecycle/")})
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read the checkpoint {p}: {e}") from e


class Checkpoints:
    """Where checkpoints go (``path``; None: memory only) and the latest one taken.

    ``loaded``: the checkpoint found at start (None: none, or unreadable: logged);
    ``lineage``: the id this history of checkpoints writes into commit metadata (kept
    from the loaded one, new otherwise).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.loaded: Checkpoint | None = None
        if self.path is not None and self.path.exists():
            try:
                self.loaded = Checkpoint.from_file(self.path)
            except DataError as e:
                log.warning("%s; starting from the model's held-out scores", e)
        self.lineage = self.loaded.lineage if self.loaded is not None and self.loaded.lineage != "legacy" \
            else uuid.uuid4().hex[:16]
        self.seq = self.loaded.seq if self.loaded is not None else 0
        self.latest: Checkpoint | None = None
        self.failures_ = 0

    def take(self, model_version: str, positions: Positions, pipeline: dict[str, Any],
             lifecycle: dict[str, npt.NDArray[Any]], write: bool = True) -> Checkpoint:
        """Keep this state as the latest checkpoint and write it (``write=False``: in
        memory only). A write that fails is logged and counted; the checkpoint in memory
        still serves a rollback."""
        self.seq += 1
        rest = {k: v for k, v in pipeline.items() if k != "arrays"}
        ck = Checkpoint(self.lineage, self.seq, model_version, dict(positions), json.dumps(rest),
                        dict(pipeline.get("arrays", {})), lifecycle)
        self.latest = ck
        if self.path is not None and write:
            try:
                write_atomic(self.path, ck.to_bytes(), fsync=True)
            except DataError as e:
                self.failures_ += 1
                log.warning("%s; the previous checkpoint stays on disk", e)
        return ck
