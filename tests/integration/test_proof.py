"""The quick proof (scripts/proof --quick, issue 16) on the real broker: a crash loop,
rebalances 1 -> 2 -> 3 -> 1 and a broker restart, each accounted record by record from the
topics (streamvae/testing/proof/account.py). The bad-input corpus and exactly-once
delivery under SIGKILL have their own tests (test_corpus.py, test_exactly_once.py);
scripts/proof runs the crash loop in exactly-once mode too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamvae.testing.proof import Context, Outcome, brokerfaults, crashloop, rebalance

RECOVERY_TARGET_S = 15.0


def check(out: Outcome) -> None:
    """Nothing lost, missed or crashed; a readable account when something was."""
    why = {k: v for k, v in out.as_dict().items() if k != "notes"}
    assert out.records > 0 and out.windows > 0 and out.anomalies > 0 and out.bad_records > 0, why
    assert (out.lost_records, out.lost_windows, out.missed_anomalies, out.crashes) == (0, 0, 0, 0), (why, out.notes)
    assert out.notes["duplicate_alerts_differing"] == 0, (  # a repeat is the same alert
        out.notes["duplicate_alert_fields"], out.notes.get("duplicate_alert_example"), out.notes)


def test_a_crash_loop_loses_nothing_and_recovers_in_time(broker: Any, model_dir: Path, tmp_path: Path) -> None:
    out = crashloop.run(Context(broker.bootstrap, model_dir, tmp_path, quick=True, seed=1))
    check(out)
    assert out.notes["not_reached"] == [], out.notes
    assert out.recovery_s and max(out.recovery_s) < RECOVERY_TARGET_S, out.recovery_s


def test_partitions_moving_between_one_two_and_three_daemons_keep_their_windows(broker: Any, model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    out = rebalance.run(Context(broker.bootstrap, model_dir, tmp_path, quick=True, seed=3))
    check(out)
    assert out.notes["leaving_exit_codes"] == [0, 0], out.notes
    assert out.notes["windows_rescored"] == 0, out.notes  # rebuilt from the committed position, not scored again


def test_a_broker_restart_mid_run_loses_nothing(broker_mod: Any, model_dir: Path, tmp_path: Path) -> None:
    own = broker_mod.LocalBroker().start()  # its own broker: this test stops it
    try:
        out = brokerfaults.run(Context(own.bootstrap, model_dir, tmp_path, quick=True, seed=4, broker=own))
    finally:
        own.stop()
    check(out)
    assert out.notes["alive_after_each_outage"] == [True], out.notes
