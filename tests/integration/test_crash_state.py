"""State that commits with the offsets, on the real broker (issue 15, item 5).

The same feed (four pumps, one fault) goes to two one-partition topics. One daemon reads
the first straight through. Another reads the second and is killed with SIGKILL at a
named point (streamvae/service/failpoints.py): after a batch's delivery, before its
commit; right after a checkpoint, before the commit it covers; and after a commit, before
the next checkpoint. It is then restarted and reads to the end. Both stop with SIGTERM,
which writes a last checkpoint: the crashed-and-restarted daemon's thresholds, episodes
and retraining buffer must equal the uninterrupted daemon's, its alerts must be the
same alerts, and none may be on the topic twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from harness import T0, Env, series
from helpers import state_diff

from streamvae.service.checkpoint import Checkpoint
from streamvae.testing.procs import DaemonProc, run_cmd

PUMPS = 4
N = 700  # readings per pump: ~2,800 records, read in polls of at most 100


def produce(env: Env) -> None:
    xs = [series(N, seed=300 + e) for e in range(PUMPS)]
    xs[1][400:460, 1] += 4.0  # a level shift of pump-1's second feature
    for i in range(N):
        for e, x in enumerate(xs):
            env.send_reading(f"pump-{e}", T0 + i, x[i])
    env.flush()


@pytest.fixture
def envs(broker: Any) -> Iterator[list[Env]]:
    made = [Env(broker.bootstrap, partitions=1) for _ in range(2)]
    yield made
    for e in made:
        e.close()



def start(env: Env, model: Path, tmp: Path, name: str, failpoint: str | None = None,
          procs: list[DaemonProc] | None = None, save_every: float = 1.0, commit_ms: int = 1000) -> DaemonProc:
    cfg = env.config(tmp, model, group__max_poll_records=100, threshold__state_file=str(tmp / f"{env.group}.npz"),
                     threshold__save_every=save_every, threshold__min_history=100, group__commit_interval_ms=commit_ms, retrain__state_dir=str(tmp / f"{env.group}-buffer"),
                     retrain__sample_every=2, retrain__margin=20.0)
    d = DaemonProc(run_cmd(cfg), tmp / f"{name}.log", env={"STREAMVAE_FAILPOINT": failpoint} if failpoint else {})
    if procs is not None:
        procs.append(d)
    if failpoint is None:
        d.wait_ready(90.0)
    return d


def finish(env: Env, d: DaemonProc, tmp: Path) -> Checkpoint:
    env.wait_caught_up(daemon=d, timeout=180)
    assert d.terminate(timeout=20) == 0, d.log_tail()
    return Checkpoint.from_file(tmp / f"{env.group}.npz")


# (where it dies, seconds between checkpoints, ms between commits): a commit after every
# batch and rare checkpoints leave most of the feed delivered but not in the saved state
# (it is learned again on the restart, silently); a checkpoint after every batch and rare
# commits leave a saved state ahead of the commit. (Not every 0.3 s: the first batch
# commits at once, and so does the end of a backlog, so a feed read within 0.3 s met its
# second checkpoint only when quiet, with everything committed: a CI run failed so.)
POINTS = [("after_delivery:20", 600.0, 0), ("after_checkpoint:2", 0.001, 600_000), ("after_commit:8", 600.0, 0)]


@pytest.mark.parametrize("point, save_every, commit_ms", POINTS)
def test_a_crash_at_any_point_leaves_the_state_an_uninterrupted_run_has(envs: list[Env], model_dir: Path,
                                                                       tmp_path: Path, point: str, save_every: float,
                                                                       commit_ms: int, daemons: list[DaemonProc]) -> None:
    procs = daemons  # closed at the end, whatever happens
    straight, crashed = envs
    for env in envs:
        produce(env)
    ref = finish(straight, start(straight, model_dir, tmp_path, "straight", procs=procs), tmp_path)

    d = start(crashed, model_dir, tmp_path, "crash", point, procs, save_every, commit_ms)
    assert d.proc.wait(timeout=120) == -9, f"the daemon did not die at {point}\n{d.log_tail()}"
    assert crashed.scored_fraction() < 1.0, "it died after reading everything: the test proves nothing"
    again = finish(crashed, start(crashed, model_dir, tmp_path, "restart", None, procs, save_every, commit_ms), tmp_path)
    log = (tmp_path / "restart.log").read_text()
    assert "state restored" in log

    assert state_diff(again.pipeline, ref.pipeline) is None, state_diff(again.pipeline, ref.pipeline)
    assert again.pipeline["bank"]["own"] and again.pipeline["episodes"]["entities"] is not None
    assert set(again.lifecycle) == set(ref.lifecycle) and ref.lifecycle
    for k, v in ref.lifecycle.items():
        assert np.array_equal(again.lifecycle[k], v, equal_nan=v.dtype.kind == "f"), f"retraining state {k} differs"

    ids = Counter(a["alert_id"] for a in crashed.read(crashed.alerts))
    assert not [k for k, n in ids.items() if n > 1], "an alert is on the topic twice"
    assert set(ids) == {a["alert_id"] for a in straight.read(straight.alerts)} and ids
