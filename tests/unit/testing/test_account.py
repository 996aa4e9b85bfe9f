"""The proof's accounting (streamvae/testing/proof/account.py) on hand-made topic contents."""

from __future__ import annotations

import json
from typing import Any

from streamvae.testing.proof import Outcome
from streamvae.testing.proof.account import Record, Topics, account
from streamvae.testing.proof.plant import T0, WINDOW, Anomaly, Sent

STEPS = 100


def rec(value: dict[str, Any], offset: int = 0) -> Record:
    return Record(value, json.dumps(value).encode(), 0, offset, 0)


def scores(entity: str, ends: range) -> list[Record]:
    return [rec({"entity": entity, "window_end": float(T0 + i)}) for i in ends]


def alert(kind: str, entity: str, end: int, eid: str, aid: str, **extra: Any) -> Record:
    return rec({"alert_id": aid, "kind": kind, "entity": entity, "window_end": float(T0 + end), "episode_id": eid,
                **extra})


def test_every_window_reading_and_refused_record_is_accounted() -> None:
    sent = Sent(steps=STEPS, anomalies=[Anomaly("a", 40, 10, 0)], bad=[(0, 7), (0, 9)])
    got = Topics(scores=scores("a", range(WINDOW - 1, STEPS)) + scores("b", range(WINDOW - 1, 60)),
                 alerts=[alert("open", "a", 45, "x", "1")], dead=[rec({"partition": 0, "offset": 7})])
    out = account(Outcome("t"), sent, ["a", "b"], got)
    assert out.windows == 2 * (STEPS - WINDOW + 1) and out.lost_windows == STEPS - 60  # b's last windows
    assert out.notes["lost_good_readings"] == STEPS - 60 and out.notes["lost_bad_records"] == 1
    assert out.lost_records == STEPS - 60 + 1 and out.missed_anomalies == 0


def test_an_anomaly_is_alerted_by_its_own_episode_or_one_still_open_and_repeats_are_compared() -> None:
    sent = Sent(steps=STEPS, anomalies=[Anomaly("a", 40, 10, 0), Anomaly("b", 40, 10, 0), Anomaly("c", 40, 10, 0)])
    got = Topics(scores=[s for e in "abc" for s in scores(e, range(WINDOW - 1, STEPS))], alerts=[
        alert("open", "b", 37, "y", "2"), alert("close", "b", 70, "y", "3"),  # opened just before, still open
        alert("open", "c", 20, "z", "4"), alert("close", "c", 30, "z", "5"),  # closed before: c is missed
        alert("open", "c", 20, "z", "4", detected_at=1.0), alert("close", "c", 30, "z", "5", score=9.0),
    ])
    out = account(Outcome("t"), sent, ["a", "b", "c"], got)
    assert out.missed_anomalies == 2 and out.notes["missed"] == ["a@40 feature 0", "c@40 feature 0"]
    assert out.notes["covered_by_earlier_episode"] == 1
    assert out.duplicate_alerts == 2 and out.notes["duplicate_alerts_differing"] == 1  # detected_at aside
    assert out.notes["duplicate_alert_fields"] == ["score"]
    assert out.notes["duplicate_alert_example"]["differs"] == {"score": [None, 9.0]}  # the first had none
