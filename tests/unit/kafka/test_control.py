"""The control-event schema without a broker: what publishers write is what readers accept."""

from __future__ import annotations

from typing import Any

import pytest

from streamvae.kafka.control import ACTIONS, TYPES, ControlError, ControlEvent, control_event


@pytest.mark.parametrize("kind", TYPES)
def test_every_event_a_publisher_builds_reads_back_unchanged(kind: str) -> None:
    d = control_event(kind, "v2", "v1", "retrain: drift", at=12.5, reasons=["auc 0.61 < 0.70"] if kind == "rejected" else [])
    ev = ControlEvent.from_dict(d)
    assert ev.to_dict() == d and ev.type == kind and ev.at == 12.5
    assert (kind in ACTIONS) == (kind != "rejected")


def test_the_time_defaults_to_now() -> None:
    import time

    before = time.time()
    assert before <= control_event("promote", "v2")["at"] <= time.time()


@pytest.mark.parametrize("event, words", [
    ({"type": "delete", "version": "v2"}, "type must be one of promote, rollback, rejected"),
    ({"type": "promote"}, "needs a version id"),
    ({"type": "promote", "version": ""}, "needs a version id"),
    ({"type": "promote", "version": 7}, "needs a version id"),
    ({"type": "rollback", "version": "v1", "previous": 3}, "previous must be a version id or null"),
    ({"type": "promote", "version": "v2", "at": "yesterday"}, "at must be unix seconds"),
    ({"type": "promote", "version": "v2", "at": True}, "at must be unix seconds"),
    ({"type": "rejected", "version": "v2", "reasons": "too noisy"}, "reasons must be a list of strings"),
    ({"type": "rejected", "version": "v2", "reasons": [1]}, "reasons must be a list of strings"),
])
def test_a_malformed_event_is_refused_naming_what_is_wrong(event: dict[str, Any], words: str) -> None:
    with pytest.raises(ControlError, match=words):
        ControlEvent.from_dict(event)


@pytest.mark.parametrize("kind, version", [("delete", "v2"), ("promote", ""), ("rollback", None)])
def test_a_publisher_cannot_write_a_malformed_event(kind: str, version: Any) -> None:
    with pytest.raises(ControlError):
        control_event(kind, version)
