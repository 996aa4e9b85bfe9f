"""The batch contract and state that goes back to a checkpoint, without a broker.

A feed of four pumps (one with a level shift, one bad record) is cut into batches and
run through :class:`BatchStep` twice: once straight through, and once as a daemon that
checkpointed after batch 3, delivered batches 4-6, and then crashed (or failed a
delivery): a new pipeline restored from the checkpoint reads again from the checkpoint's
positions. The second run must end in the same learned state, emit nothing that the
first part already emitted, and together emit exactly what the straight run emitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from helpers import FEATURE_NAMES, HeldUntilIdle, make_series, state_diff
from streamvae.core.bank import ThresholdBank
from streamvae.core.episodes import EpisodeTracker
from streamvae.core.pipeline import StreamPipeline
from streamvae.core.records import RecordDecoder
from streamvae.core.windows import WindowAssembler
from streamvae.kafka.offsets import PartitionOffsets
from streamvae.service.batch import BatchStep, Marks
from streamvae.service.checkpoint import Checkpoint, Checkpoints
from streamvae.service.intake import Intake

PUMPS = ["pump-1", "pump-2", "pump-3", "pump-4"]
N = 160  # readings per pump
BAD = 333  # the offset of a record that is not JSON
BATCH = 64
NOW = 2e9  # the wall clock: long after the feed


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    offset: int


TOPIC = TP("in", 0)


def feed() -> list[Rec]:
    series = {p: make_series(N, seed=200 + k) for k, p in enumerate(PUMPS)}
    series["pump-2"][90:120, 1] += 3.0  # a level shift of the pressure
    recs: list[Rec] = []
    for i in range(N):
        for p in PUMPS:
            off = len(recs)
            value = b"{not json" if off == BAD else json.dumps(
                {"entity": p, "ts": 1000.0 + i, "values": dict(zip(FEATURE_NAMES, map(float, series[p][i])))}).encode()
            recs.append(Rec(p.encode(), value, off))
    return recs


def step(detector: Any, warm: np.ndarray) -> BatchStep:
    cfg = detector.config
    pipe = StreamPipeline(detector, ThresholdBank("spot", {"q": 1e-3}).warm_start(warm),
                          EpisodeTracker(open_after=3, close_after=20, update_every=60),
                          WindowAssembler(size=cfg.window, stride=1, n_features=cfg.n_features), model_version="test")
    return BatchStep(Intake(RecordDecoder(FEATURE_NAMES), 100_000), pipe, PartitionOffsets(keep=cfg.window - 1))


@pytest.fixture(scope="module")
def warm(detector: Any, heldout_windows: np.ndarray) -> np.ndarray:
    return np.concatenate([detector.heldout_scores_, detector.score(heldout_windows).score])


def run(s: BatchStep, recs: list[Rec], marks: Marks = Marks()) -> tuple[list[Any], list[int], list[Any]]:
    """(alert ids emitted, dead-lettered offsets, outcomes) over ``recs`` in batches."""
    ids: list[str] = []
    dead: list[int] = []
    outs = []
    for lo in range(0, len(recs), BATCH):
        out = s.process({TOPIC: recs[lo : lo + BATCH]}, {TOPIC: marks}, now=NOW)
        ids += [a.alert_id for a in out.alerts]
        dead += [d.offset for d in out.dead_letters]
        outs.append(out)
    return ids, dead, outs


def test_a_batch_is_one_outcome_with_its_dead_letters_and_commit_positions(detector: Any, warm: np.ndarray) -> None:
    recs = feed()
    s = step(detector, warm)
    out = s.process({TOPIC: recs[320:384]}, {}, now=NOW)
    assert [(d.offset, d.error.reason, d.value) for d in out.dead_letters] == [(BAD, "not_json", b"{not json")]
    pos, scored_to = out.positions[TOPIC]
    # pump-2 lost a reading to the bad record: 15 readings, no full window yet, so the
    # position stays at its first reading (the others keep their last W - 1)
    assert scored_to == 384 and pos == 321
    assert out.records == 64 and out.learn is out.result


def test_back_to_a_checkpoint_nothing_is_learned_twice_or_emitted_twice(detector: Any, warm: np.ndarray,
                                                                         tmp_path: Path) -> None:
    recs = feed()
    straight = step(detector, warm)
    all_ids, all_dead, _ = run(straight, recs)
    assert all_ids and all_dead == [BAD]  # the shift alerts; the bad record is dead-lettered once

    first = step(detector, warm)
    cut, crash = 3 * BATCH, 6 * BATCH  # checkpoint after batch 3; batches 4-6 delivered, then the crash
    ids_a, _, outs = run(first, recs[:cut])
    state = first.pipeline.state()
    read_from = outs[-1].positions[TOPIC][0]
    ids_b, dead_b, _ = run(first, recs[cut:crash])

    second = step(detector, warm)
    saved = Checkpoints(tmp_path / "ck.npz")
    saved.take("test", {}, state, {})
    second.pipeline.restore(Checkpoint.from_file(tmp_path / "ck.npz").pipeline)  # as written to disk and read back
    ids_c, dead_c, outs_c = run(second, recs[read_from:], Marks(learned_to=cut, observed_to=cut, emitted_to=crash))
    assert state_diff(second.pipeline.state(), straight.pipeline.state()) is None
    assert ids_a + ids_b + ids_c == all_ids  # each alert emitted once, in order
    assert dead_b + dead_c == [BAD] and BAD < crash and dead_c == []
    rebuilt = sum(o.rebuilt for o in outs_c)
    assert rebuilt == cut - read_from  # records before the checkpoint only rebuilt windows
    # the lifecycle is shown only what it has not seen: windows of records from the checkpoint on
    learned = [w for o in outs_c for w in o.learn.scored]
    assert learned and min(w.end_ts for w in learned) >= recs[cut].offset // 4 + 1000.0 - 1


def test_the_lifecycle_sees_nothing_again_after_a_failed_delivery(detector: Any, warm: np.ndarray) -> None:
    recs = feed()
    s = step(detector, warm)
    run(s, recs[: 2 * BATCH])
    # after a rollback: state as of offset 128, everything up to 256 already observed and emitted
    out = s.process({TOPIC: recs[2 * BATCH : 4 * BATCH]}, {TOPIC: Marks(2 * BATCH, 4 * BATCH, 4 * BATCH)}, now=NOW)
    assert out.result.scored and not out.learn.scored and not out.alerts and not out.dead_letters



def test_every_window_is_delivered_once_with_the_record_that_completed_it(detector: Any, warm: np.ndarray,
                                                                          tmp_path: Path) -> None:
    recs = feed()
    straight = [(s.entity, s.end_ts) for o in run(step(detector, warm), recs)[2] for s, _, _ in o.scored()]
    assert len(straight) == len(set(straight)) == 4 * (N - 16 + 1) - 1  # pump-2 lost a reading to the bad record
    first = step(detector, warm)
    cut, crash = 3 * BATCH, 6 * BATCH
    outs = run(first, recs[:cut])[2]
    state, read_from = first.pipeline.state(), outs[-1].positions[TOPIC][0]
    outs += run(first, recs[cut:crash])[2]
    second = step(detector, warm)
    second.pipeline.restore(state)
    outs += run(second, recs[read_from:], Marks(learned_to=cut, observed_to=cut, emitted_to=crash))[2]
    delivered = [(s, tp, off) for o in outs for s, tp, off in o.scored()]
    assert [(s.entity, s.end_ts) for s, _, _ in delivered] == straight  # once each, in order, across the crash
    for s, tp, off in delivered:
        rec = json.loads(recs[off].value or b"")
        assert tp == TOPIC and (rec["entity"], rec["ts"]) == (s.entity, s.end_ts)


def test_a_big_batch_notes_its_records_while_the_model_scores_and_leaves_out_the_refused(detector: Any,
                                                                                        warm: np.ndarray) -> None:
    """BatchStep notes which records the windows hold in the pipeline's ``idle`` (a big
    batch) or after it (a small one): the same commit positions and the same notes either
    way, a reading the windows refused (stamped two days back) in neither."""
    recs = feed()[:400]
    old = Rec(b"pump-1", json.dumps({"entity": "pump-1", "ts": 1000.0 + 90 - 2 * 86_400,
                                     "values": dict.fromkeys(FEATURE_NAMES, 0.0)}).encode(), 0)
    recs = [*recs[:390], old, *recs[390:]]  # near the end: its offset would stay among the notes
    for off, r in enumerate(recs):
        r.offset = off
    seen = []
    for overlap in (64, 0):  # 0: never on the worker, so never idle
        s = step(detector, warm)
        s.pipeline.overlap = overlap
        held = HeldUntilIdle(detector)
        s.pipeline.scorer = held
        calls: list[int] = []

        def idle() -> None:
            calls.append(1)
            held.idle.set()

        outs = []
        for lo, hi in ((0, 200), (200, 401)):
            held.idle.clear()  # each big batch's worker waits for its own idle
            outs.append(s.process({TOPIC: recs[lo:hi]}, {}, now=NOW, idle=idle))
        s.pipeline.close()
        assert sorted(d.offset for o in outs for d in o.dead_letters) == [BAD, 390]  # not JSON; refused
        need = {e: (list(d), t[0]) for e, (d, t) in s.offsets._need[TOPIC].items()}
        assert all(390 not in d for d, _ in need.values())
        seen.append(([o.positions[TOPIC] for o in outs], need, len(calls)))
    (pos_idle, need_idle, n_idle), (pos_after, need_after, n_after) = seen
    assert n_idle == 2 and n_after == 0
    assert pos_idle == pos_after and need_idle == need_after
