"""``group.delivery = "exactly_once"`` on the real broker: SIGKILL at every step of a batch's
transaction, restart, and read the output as a read_committed consumer.

The same feed (four pumps, one fault, a malformed record every 11 seconds) goes to two topics.
One daemon reads the first straight through: the alerts and dead letters expected. Another
reads the second and is killed with SIGKILL at each named point in turn
(streamvae/service/failpoints.py), restarted after each kill, then reads to the end:

- ``after_delivery``: the batch's records are acknowledged inside its open transaction;
- ``before_commit``: its offsets are in the transaction too, not committed;
- ``after_commit``: committed, the state since the last checkpoint not saved;
- ``after_checkpoint``: a checkpoint was written after a commit.

A read_committed consumer must then see every expected alert id and every dead letter
exactly once; a read_uncommitted one sees the aborted transactions' records as well,
which shows the kills did land inside transactions with records in them.

The readings all go to partition 0 of the three; the malformed records go to their key's
partition (all three), so a transaction still commits offsets of several partitions. The
readings must keep one order: until an entity has ``threshold.min_history`` scores of its
own, its windows are judged by the global tracker, which learns from every entity's
scores in the order they arrive, and the order across partitions depends on when each
fetch returns. Spread over three partitions, the two runs could differ at a borderline
window without anything being lost: replayed offline in 8 random interleavings of the
three partitions' polls, one run of this feed dropped two of its episodes, whose opening
windows exceed the threshold by 0.03-0.1 (4 of the 8 alert ids; a CI run on 2026-12-05
failed that way).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
from harness import T0, Env, series

from streamvae.config import KafkaConfig
from streamvae.kafka.clients import recent_values
from streamvae.testing.procs import DaemonProc, run_cmd

PUMPS = 4
N = 600  # readings per pump: ~2,400 records and 55 bad ones, read in polls of at most 100
KILLS = ["after_delivery:4", "before_commit:4", "after_commit:4", "after_checkpoint:2"]


def produce(env: Env) -> int:
    xs = [series(N, seed=500 + e) for e in range(PUMPS)]
    xs[2][300:360, 0] += 4.0  # a level shift of pump-2's first feature
    bad = 0
    for i in range(N):
        for e, x in enumerate(xs):
            env.send_reading(f"pump-{e}", T0 + i, x[i], partition=0)  # one order (see the module doc)
        if i % 11 == 5:
            env.send(f"pump-{i % PUMPS}", b"{not json")
            bad += 1
    env.flush()
    return bad


@pytest.fixture
def reference(broker: Any) -> Iterator[Env]:
    """Topics for the uninterrupted run (``kenv``'s are the crashed one's)."""
    env = Env(broker.bootstrap)
    yield env
    env.close()


def start(env: Env, model: Path, tmp: Path, name: str, failpoint: str | None, procs: list[DaemonProc]) -> DaemonProc:
    cfg = env.config(tmp, model, group__delivery="exactly_once", group__max_poll_records=100,
                     threshold__state_file=str(tmp / f"{env.group}.npz"), threshold__save_every=1.0)
    d = DaemonProc(run_cmd(cfg), tmp / f"{name}.log", env={"STREAMVAE_FAILPOINT": failpoint} if failpoint else {})
    procs.append(d)
    return d


def read(env: Env, topic: str, isolation: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its end (for read_committed: its last stable offset)."""
    values = recent_values(KafkaConfig(bootstrap_servers=env.bootstrap), topic, 1 << 30, isolation_level=isolation)
    return [json.loads(v) for v in values]


def about(alert: dict[str, Any]) -> tuple[str, str, float]:
    """What an alert is, for a failure message: kind, entity, seconds into the feed."""
    return (str(alert["kind"]), str(alert.get("entity")), float(alert.get("window_end") or T0) - T0)


def twice(values: list[Any]) -> list[Any]:
    return [v for v, n in Counter(values).items() if n > 1]


def test_sigkill_at_every_step_of_the_transaction_repeats_nothing_and_loses_nothing(
        kenv: Env, reference: Env, model_dir: Path, tmp_path: Path, daemons: list[DaemonProc]) -> None:
    straight, crashed = reference, kenv
    bad = [produce(env) for env in (straight, crashed)][0]
    ref = start(straight, model_dir, tmp_path, "straight", None, daemons)  # alongside the crashes (2 cores)
    for n, point in enumerate(KILLS):
        d = start(crashed, model_dir, tmp_path, f"crash{n}", point, daemons)
        assert d.proc.wait(timeout=120) == -9, f"the daemon did not die at {point}\n{d.log_tail()}"
    assert crashed.scored_fraction() < 1.0, "it died after reading everything: the test proves nothing"
    straight.wait_caught_up(daemon=ref, timeout=120)
    expected = {a["alert_id"]: about(a) for a in read(straight, straight.alerts, "read_committed")}
    assert expected, "the reference run raised no alert: the test proves nothing"
    last = start(crashed, model_dir, tmp_path, "restart", None, daemons)
    last.wait_ready(90.0)
    crashed.wait_caught_up(daemon=last, timeout=120)
    assert last.terminate(timeout=20) == 0, last.log_tail()

    got = read(crashed, crashed.alerts, "read_committed")
    alerts = [a["alert_id"] for a in got]
    assert not twice(alerts), f"alert ids on the topic twice: {twice(alerts)}"
    missing = [expected[i] for i in expected.keys() - set(alerts)]
    extra = [about(a) for a in got if a["alert_id"] not in expected]
    assert not missing and not extra, f"missing {sorted(missing)}; extra {sorted(extra)}"
    dead = [(d["partition"], d["offset"]) for d in read(crashed, crashed.dlq, "read_committed")]
    assert not twice(dead), f"records dead-lettered twice: {twice(dead)}"
    assert len(dead) == bad
    # the aborted transactions' records are on the log, visible to read_uncommitted only
    assert len(read(crashed, crashed.dlq, "read_uncommitted")) > len(dead)
