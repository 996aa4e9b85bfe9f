"""The bad-input corpus on the real broker (issue 16, item 2; streamvae/testing/proof/corpus.py):
10,000 malformed records of more than 30 kinds mixed into a normal feed. The daemon never
exits, each bad record is on the dead-letter topic once with its reason and its original
bytes, every window of the good readings is scored, and the retraining buffer holds no
value outside the good feed's range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamvae.testing.proof import Context
from streamvae.testing.proof.corpus import TOTAL, run


def test_the_whole_bad_input_corpus_is_dead_lettered_and_nothing_good_is_lost(broker: Any, model_dir: Path,
                                                                              tmp_path: Path) -> None:
    out = run(Context(broker.bootstrap, model_dir, tmp_path, quick=True, seed=0))
    notes = out.notes
    assert out.bad_records == TOTAL and notes["kinds"] >= 30, notes
    assert out.crashes == 0, notes.get("crash_logs")
    assert (out.lost_records, out.lost_windows, out.missed_anomalies) == (0, 0, 0), notes
    assert notes["dead_letters_repeated"] == 0 and notes["dead_letters_unexpected"] == 0, notes
    assert notes["buffer_windows"] > 1000 and notes["buffer_bad_windows"] == 0, notes
