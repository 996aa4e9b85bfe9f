"""Checkpoints on disk, and where a partition is read from after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamvae.kafka.clients import OffsetAndMetadata
from streamvae.kafka.offsets import encode_metadata
from streamvae.service.batch import Marks
from streamvae.service.checkpoint import Checkpoint, Checkpoints
from streamvae.service.partitions import Partitions


class TP(NamedTuple):
    topic: str
    partition: int


P0 = TP("in", 0)


def test_a_checkpoint_round_trips_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ck.npz"
    cks = Checkpoints(path)
    assert cks.loaded is None and not path.exists()
    life = {"buffer_windows": np.arange(24, dtype=np.float32).reshape(2, 4, 3), "meta": np.asarray('{"n": 2}')}
    cks.take("v1", {("in", 0): (90, 120)}, {"bank": {"x": [1.5, float("inf")]}, "accepted": 2}, life)
    again = Checkpoints(path)
    ck = again.loaded
    assert ck is not None and ck.seq == 1 and ck.model_version == "v1" and ck.lineage == cks.lineage == again.lineage
    assert ck.positions == {("in", 0): (90, 120)}
    assert ck.pipeline == {"bank": {"x": [1.5, float("inf")]}, "accepted": 2}
    assert np.array_equal(ck.lifecycle["buffer_windows"], life["buffer_windows"]) and str(ck.lifecycle["meta"]) == '{"n": 2}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.npz"]  # no temporary file left


def test_the_in_memory_copy_cannot_change_after_it_is_taken(tmp_path: Path) -> None:
    cks = Checkpoints(None)
    state: dict[str, Any] = {"bank": {"own": {"a": 1.0}}}
    cks.take("v1", {}, state, {})
    state["bank"]["own"]["a"] = 2.0
    assert cks.latest is not None and cks.latest.pipeline == {"bank": {"own": {"a": 1.0}}}


def test_an_older_versions_threshold_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "thresholds.json"
    p.write_text(json.dumps({"model_version": "v0", "bank": {"kind": "spot"}, "baselines": {}}))
    ck = Checkpoints(p).loaded
    assert ck is not None and ck.model_version == "v0" and ck.pipeline["bank"] == {"kind": "spot"} and ck.positions == {}


def test_an_unreadable_checkpoint_is_logged_and_ignored(tmp_path: Path, caplog: Any) -> None:
    p = tmp_path / "ck.npz"
    p.write_bytes(b"PK\x03\x04 truncated")
    cks = Checkpoints(p)
    assert cks.loaded is None and "cannot read the checkpoint" in caplog.text


def _ck(lineage: str = "L1") -> Checkpoint:
    return Checkpoint(lineage, 3, "v1", {("in", 0): (80, 100)}, "{}")


def test_a_partition_resumes_from_the_checkpoint_its_lineage_committed() -> None:
    parts = Partitions()
    committed = OffsetAndMetadata(140, encode_metadata(150, "L1"), -1)  # committed after the checkpoint
    assert parts.resume(P0, committed, first=140, ck=_ck()) == 80
    assert parts.marks[P0] == Marks(learned_to=100, observed_to=100, emitted_to=150)


def test_a_checkpoint_newer_than_the_commit_counts_as_emitted() -> None:
    parts = Partitions()
    committed = OffsetAndMetadata(60, encode_metadata(70, "L1"), -1)  # the commit after the checkpoint never landed
    assert parts.resume(P0, committed, first=60, ck=_ck()) == 80  # the windows are rebuilt from its position
    assert parts.marks[P0] == Marks(100, 100, 100)


def test_a_partition_another_process_committed_ignores_this_checkpoint() -> None:
    parts = Partitions()
    committed = OffsetAndMetadata(300, encode_metadata(310, "OTHER"), -1)
    assert parts.resume(P0, committed, first=300, ck=_ck()) == 300
    assert parts.marks[P0] == Marks(310, 310, 310)


def test_without_a_commit_the_checkpoint_alone_decides() -> None:
    parts = Partitions()
    assert parts.resume(P0, None, first=0, ck=_ck()) == 80  # the checkpoint holds everything before
    assert parts.marks[P0] == Marks(100, 100, 100)
    fresh = Partitions()
    assert fresh.resume(P0, None, first=0, ck=None) == 0 and fresh.marks[P0] == Marks(-1, -1, -1)


def test_delivery_moves_every_mark_and_a_rollback_only_the_learned_one() -> None:
    parts = Partitions()
    parts.resume(P0, None, first=0, ck=None)
    parts.delivered({P0: (50, 120)})
    assert parts.marks[P0] == Marks(120, 120, 120) and parts.next_offset[P0] == 120
    assert parts.checkpoint_positions(lambda tp, nxt: nxt - 10) == {("in", 0): (110, 120)}
    assert parts.rolled_back(P0, (40, 90)) == 40
    assert parts.marks[P0] == Marks(90, 120, 120) and P0 not in parts.next_offset
