"""Two holes the bad-input corpus (issue 16) found in the intake: a name given twice in one
JSON object passed as its last value (``{"values": {"a": 1, "a": "hot"}}`` read as "hot",
``{"entity": "p1", "entity": "p2"}`` as p2), and a reading stamped decades back (a clock
never set) cut its entity's window sequence, losing every open window, instead of being
refused."""

from __future__ import annotations

import pytest

from streamvae.core.records import RecordDecoder
from streamvae.core.windows import WindowAssembler
from streamvae.errors import RecordError
from streamvae.service.intake import Intake


@pytest.mark.parametrize("value", [
    b'{"entity": "p1", "entity": "p2", "ts": 1, "values": {"a": 1}}',
    b'{"entity": "p1", "ts": 1, "ts": "x", "values": {"a": 1}}',
    b'{"entity": "p1", "ts": 1, "values": {"a": 1, "a": "hot"}}',
    b'{"entity": "p1", "readings": [{"ts": 1, "values": {"a": 1}, "values": {"a": 2}}]}',
    b'{"entity": "p\\u003a1", "ts": 1, "values": {"a": 1, "a": 2}}',  # an escaped colon hides nothing
])
def test_a_name_given_twice_in_one_object_is_duplicate_key(value: bytes) -> None:
    readings, why = Intake(RecordDecoder(["a"]), 10_000).decode(None, value, None)
    assert readings == [] and why is not None and why.reason == "duplicate_key"


@pytest.mark.parametrize("value", [
    b'{"entity": "plant:3/pump:17", "ts": "2026-11-23T07:00:00.250+01:00", "values": {"a": 1, "b:c": 2}}',
    b'{"entity": "p\\u003a1", "ts": 1, "values": {"a": 1}}',
    b'{"entity": "p1", "readings": [{"ts": 1, "values": {"a": 1}}, {"ts": 2, "values": {"a": 2}}]}',
])
def test_records_without_a_repeat_are_not_refused_for_one(value: bytes) -> None:
    readings, why = Intake(RecordDecoder(["a"]), 10_000).decode(None, value, None)
    assert why is None and readings


def test_a_reading_stamped_more_than_a_day_back_is_refused_and_the_windows_go_on() -> None:
    asm = WindowAssembler(size=4, stride=1, n_features=1)
    ends = [w.end_ts for t in range(6) for w in asm.push("p", 1e9 + t, [1.0])]
    for ts in (0.0, 1e9 - 86_401):
        with pytest.raises(RecordError) as e:
            asm.push("p", ts, [1.0])
        assert e.value.reason == "ts_too_old"
    ends += [w.end_ts for t in range(6, 9) for w in asm.push("p", 1e9 + t, [1.0])]
    assert ends == [1e9 + t for t in range(3, 9)] and asm.clock_resets_ == 0
    asm.push("p", 1e9 - 3600, [1.0])  # an hour back is a clock slip: a new sequence, as before
    assert asm.clock_resets_ == 1
