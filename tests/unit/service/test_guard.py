"""The dead-letter guard without a broker: one alarm per episode, none for a trickle."""

from __future__ import annotations

from streamvae.service.guard import RejectionGuard
from streamvae.service.tools import format_alert


def run(g: RejectionGuard, batches: list[tuple[int, int]]) -> list[str | None]:
    return [g.observe(n, ["bad_value"] * bad) for n, bad in batches]


def test_a_schema_change_alarms_once_and_recovery_ends_the_episode() -> None:
    g = RejectionGuard(window=1000, share=0.5)
    events = run(g, [(100, 1)] * 20 + [(100, 100)] * 30 + [(100, 0)] * 20)
    assert [e for e in events if e] == ["open", "close"] and g.episodes_ == 1
    assert events.index("open") == 24  # the last 1,000 records: 5 bad from the good batches + 500 = 505 > 500
    assert not g.on_


def test_a_trickle_of_bad_records_never_alarms() -> None:
    g = RejectionGuard(window=1000, share=0.5)
    assert not any(run(g, [(100, 20)] * 200)) and round(g.refused_share(), 2) == 0.2


def test_no_judgement_before_a_window_of_records() -> None:
    g = RejectionGuard(window=1000, share=0.5)
    assert run(g, [(100, 100)] * 9) == [None] * 9  # 900 records, all refused: not yet a window
    assert g.observe(100, ["not_json"] * 100) == "open"
    assert g.reasons() == {"bad_value": 900, "not_json": 100}


def test_flapping_around_the_limit_is_one_episode() -> None:
    g = RejectionGuard(window=100, share=0.5)
    events = run(g, [(100, 60), (100, 40), (100, 60), (100, 40), (100, 20)])
    assert events == ["open", None, None, None, "close"]  # ends at half the limit, not at the limit


def test_the_alarm_reads_as_one_line() -> None:
    line = format_alert({"alert_id": "x", "kind": "input_rejected", "entity": None, "topic": "sensors",
                         "refused_share": 0.97, "records": 1000, "reasons": {"not_json": 970},
                         "detected_at": 1763881200.0})
    assert line == "2025-11-23T07:00:00.000Z  INPUT_REJECTED  sensors  97% of the last 1000 records refused (not_json 970)"
