"""Every way a message can be wrong becomes a reason, never an exception: one test per
record that killed the daemon or poisoned an entity (issue 14), plus the dead letter that
must always fit and name the record."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from streamvae.core.records import MAX_UNKNOWN_NAMES, ItemError, RecordDecoder
from streamvae.errors import RecordError
from streamvae.kafka import codec
from streamvae.service.intake import Intake

NOW = 1_780_000_000.0
FEATURES = ["temp", "rpm"]


def intake(max_record_bytes: int = 1_000_000, **kw: Any) -> Intake:
    return Intake(RecordDecoder(FEATURES, **kw), max_record_bytes)


def reason(value: bytes, key: bytes | None = None, now: float | None = NOW, **kw: Any) -> str | None:
    readings, why = intake(**kw).decode(key, value, now)
    return None if why is None else why.reason


def record(**fields: Any) -> bytes:
    base: dict[str, Any] = {"entity": "p1", "ts": NOW, "values": {"temp": 1.0}}
    base.update(fields)
    return orjson.dumps(base)


def test_a_good_record_decodes() -> None:
    readings, why = intake().decode(b"p1", record(), NOW)
    assert why is None and [(r.entity, r.ts, r.values[0]) for r in readings] == [("p1", NOW, 1.0)]


@pytest.mark.parametrize("depth", [1025, 5_000, 200_000])
def test_nesting_deeper_than_the_parser_allows_is_too_deep(depth: int) -> None:
    assert reason(b"[" * depth + b"]" * depth) == "too_deep"
    inner = b'{"entity": "p1", "ts": 1, "values": {"temp": ' + b"[" * depth + b"]" * depth + b"}}"
    assert reason(inner) == "too_deep"


def test_an_integer_of_400_digits_is_out_of_range_as_a_value_and_as_ts() -> None:
    digits = b"1" + b"0" * 399
    assert reason(b'{"entity": "p1", "ts": 1, "values": {"temp": ' + digits + b"}}") == "out_of_range"
    assert reason(b'{"entity": "p1", "ts": ' + digits + b', "values": {"temp": 1}}', now=None) == "bad_ts"
    assert reason(b'{"entity": "p1", "ts": 1, "values": {"temp": 1' + b"0" * 5000 + b"}}") == "out_of_range"


def test_a_value_beyond_float32_is_out_of_range_and_the_largest_it_holds_is_kept() -> None:
    assert reason(record(values={"temp": 1e39})) == "out_of_range"
    assert reason(record(values={"temp": -1e300})) == "out_of_range"
    readings, why = intake().decode(None, record(values={"temp": 3.0e38}), NOW)
    assert why is None and float(readings[0].values[0]) == pytest.approx(3.0e38, rel=1e-6)


def test_invalid_utf8_is_not_utf8_and_a_bad_key_is_bad_key() -> None:
    assert reason(b'{"entity": "p\xff1"}') == "not_utf8"
    assert reason(record(), key=b"p\xff1") == "bad_key"


@pytest.mark.parametrize("entity", ["\ud800", "pump\udfff-1", "pump\x00", "pump\n1", "a\x1bb", "\u2028"])
def test_an_entity_that_cannot_be_written_out_is_bad_entity(entity: str) -> None:
    raw = b'{"entity": "' + entity.encode("unicode_escape").replace(b"\\x", b"\\u00") + b'", "ts": 1, "values": {"temp": 1}}'
    assert reason(raw, now=None) == "bad_entity"


def test_the_last_resort_names_the_exception() -> None:
    class Exploding(RecordDecoder):
        def decode_items(self, obj: Any, key: str | None = None, now: float | None = None) -> Any:
            raise ZeroDivisionError("boom")

    readings, why = Intake(Exploding(FEATURES), 1000, fast=False).decode(None, record(), NOW)  # the Python path's
    assert readings == [] and why is not None and why.reason == "internal_error" and "ZeroDivisionError" in str(why)


def test_a_record_over_the_limit_is_refused_unread() -> None:
    assert reason(b"x" * 2_000, max_record_bytes=1_000) == "too_large"


@pytest.mark.parametrize("ts", [4e9, 1e300, "9999-12-31T23:59:59Z", "-23:59"])
def test_a_reading_from_the_future_is_ts_in_future(ts: Any) -> None:
    if ts == "-23:59":  # the right time written with an offset of -23:59: a day ahead
        ts = datetime.fromtimestamp(NOW, timezone.utc).replace(tzinfo=timezone(-timedelta(hours=23, minutes=59))).isoformat()
    assert reason(record(ts=ts)) == "ts_in_future"
    assert reason(record(ts=ts), now=None) is None  # replay: no wall clock, no such rule


def test_a_small_skew_ahead_is_accepted() -> None:
    assert reason(record(ts=NOW + 299.0)) is None
    assert reason(record(ts=NOW + 301.0)) == "ts_in_future"
    assert reason(record(ts=NOW + 10.0), max_future_s=5.0) == "ts_in_future"


def test_a_block_with_bad_items_keeps_its_good_readings_and_lists_the_bad_ones() -> None:
    items = [{"ts": NOW - 1000 + i, "values": {"temp": float(i)}} for i in range(1000)]
    items[10]["values"] = {"temp": "hot"}
    items[500]["ts"] = NOW + 1e6
    items[999] = "not an object"  # type: ignore[call-overload]
    readings, why = intake().decode(None, orjson.dumps({"entity": "p1", "readings": items}), NOW)
    assert len(readings) == 997
    assert isinstance(why, ItemError) and why.reason == "bad_value"
    assert [(d["index"], d["reason"]) for d in why.listing()] == [(10, "bad_value"), (500, "ts_in_future"), (999, "bad_readings")]


def test_unknown_feature_names_are_counted_in_bounded_space() -> None:
    dec = RecordDecoder(FEATURES)
    for k in range(20):
        dec.decode({"entity": "p1", "ts": 1.0, "values": {"temp": 1.0, **{f"f{k}-{i}": 1.0 for i in range(2_000)}}})
    assert len(dec.unknown_features_) == MAX_UNKNOWN_NAMES and dec.unknown_total_ == 40_000


@pytest.mark.parametrize("size", [10, 800_000, 999_999, 5_000_000])
def test_a_dead_letter_always_fits_and_names_the_whole_record(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    env = codec.dead_letter(b"k" * 5000, value, "sensors", 0, 7, "too_large", "m" * 10_000,
                            items=[{"index": i, "reason": "bad_value", "message": "x" * 1000} for i in range(5000)],
                            max_bytes=1_000_000)
    out = codec.dumps(env)
    assert len(out) <= 1_000_000
    kept = base64.b64decode(env["value_b64"])
    assert value.startswith(kept) and env["value_bytes"] == size and env["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert env["value_truncated"] == (len(kept) < size) and env["key_truncated"] and env["items_total"] == 5000


def test_encoding_never_fails_on_text_utf8_cannot_hold() -> None:
    out = codec.dumps({"entity": "\ud800x", "features": [{"name": "a\udfff"}]})
    assert orjson.loads(out) == {"entity": "\\ud800x", "features": [{"name": "a\\udfff"}]}


def test_the_decoder_itself_raises_only_record_errors() -> None:
    dec = RecordDecoder(FEATURES)
    for bad in [None, [], "x", {"entity": 5}, {"entity": "p"}, {"entity": "p", "ts": []}, {"entity": "p", "ts": 1, "values": 3}]:
        with pytest.raises(RecordError):
            dec.decode(bad, now=time.time())
