"""The Kafka edge's bytes <-> dicts, without a broker: parsing refuses with a reason and
nothing else, encoding never fails, and a dead letter names its record and fits its limit.

(A dead letter at sizes up to 5 MB against the producer's 1 MB is in
tests/unit/service/test_intake.py; here: small limits, missing keys and values, the caps.)
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import orjson
import pytest

from streamvae.errors import RecordError
from streamvae.kafka import codec


# --- loads ----------------------------------------------------------------------------------
def test_loads_parses_json_bytes() -> None:
    assert codec.loads(b'{"entity": "p1", "ts": 1.5, "values": {"temp": 20}}') == {
        "entity": "p1", "ts": 1.5, "values": {"temp": 20}}


@pytest.mark.parametrize("value, reason, words", [
    (b'{"entity": "p\xff1"}', "not_utf8", "not valid UTF-8 (invalid start byte at byte 13)"),
    (b"[" * 1100 + b"]" * 1100, "too_deep", "nests deeper than 1024 levels"),  # valid JSON, still refused
    (b"[" * 5000, "too_deep", "nests deeper than 1024 levels"),
    (b"1" * 5000, "out_of_range", "integer too long to be a number"),
    (b'{"ts": NaN}', "not_json", "not valid JSON"),  # a constant Python's parser would take
    (b'{"entity": "p1",', "not_json", "not valid JSON"),
    (b"", "not_json", "not valid JSON"),
])
def test_loads_refuses_with_a_reason(value: bytes, reason: str, words: str) -> None:
    with pytest.raises(RecordError) as e:
        codec.loads(value)
    assert e.value.reason == reason and words in str(e.value)


def test_valid_json_orjson_refuses_is_read_so_the_record_is_refused_for_the_right_reason() -> None:
    # a number too big for a float and a lone surrogate are valid JSON: the record layer
    # then refuses them as out of range / an entity that cannot be written, not as "not JSON"
    assert codec.loads(b'{"temp": 1e999}') == {"temp": float("inf")}
    assert codec.loads(b'{"entity": "\\ud800"}') == {"entity": "\ud800"}


# --- dumps ----------------------------------------------------------------------------------
def test_dumps_round_trips_and_writes_numpy() -> None:
    obj: dict[str, Any] = {"entity": "p1", "score": 3.25, "top": [["temp", 0.5]], "ok": True, "none": None}
    assert codec.loads(codec.dumps(obj)) == obj
    assert codec.dumps({"x": np.array([1.0, 2.5]), "n": np.float64(0.5)}) == b'{"x":[1.0,2.5],"n":0.5}'


def test_dumps_escapes_what_utf8_cannot_hold_in_keys_and_tuples_too() -> None:
    out = codec.dumps({"\udc80k": ("a\ud800", 1)})
    assert orjson.loads(out) == {"\\udc80k": ["a\\ud800", 1]}


# --- dead_letter ----------------------------------------------------------------------------
def _letter(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(key=b"pump-1", value=b'{"entity": 5}', topic="sensors", partition=3, offset=42,
                                reason="bad_entity", message="entity must be a string")
    args.update(kw)
    return codec.dead_letter(**args)


def test_a_dead_letter_names_where_the_record_came_from_and_why() -> None:
    env = _letter()
    assert (env["topic"], env["partition"], env["offset"], env["reason"]) == ("sensors", 3, 42, "bad_entity")
    assert env["message"] == "entity must be a string" and env["items"] == [] and env["items_total"] == 0
    assert base64.b64decode(env["key_b64"]) == b"pump-1" and not env["key_truncated"]
    assert base64.b64decode(env["value_b64"]) == b'{"entity": 5}' and not env["value_truncated"]
    assert env["value_bytes"] == 13 and env["value_sha256"] == hashlib.sha256(b'{"entity": 5}').hexdigest()
    assert orjson.loads(codec.dumps(env)) == env  # JSON through and through


def test_a_record_without_key_or_value() -> None:
    env = _letter(key=None, value=None, reason="not_json", message="message has no value")
    assert env["key_b64"] is None and env["key_truncated"] is False
    assert env["value_b64"] is None and env["value_bytes"] is None and env["value_sha256"] is None
    assert env["value_truncated"] is False
    empty = _letter(value=b"")
    assert empty["value_b64"] == "" and empty["value_bytes"] == 0 and empty["value_truncated"] is False


def test_the_key_is_cut_to_1_kib() -> None:
    env = _letter(key=b"k" * 2000)
    assert base64.b64decode(env["key_b64"]) == b"k" * 1024 and env["key_truncated"]


@pytest.mark.parametrize("max_bytes", [1_000, 1_500, 4_096, 10_000])
def test_the_value_is_cut_to_fit_a_small_limit_and_still_identifies_the_record(max_bytes: int) -> None:
    value = bytes(range(256)) * 40  # 10,240 bytes
    env = _letter(value=value, max_bytes=max_bytes)
    kept = base64.b64decode(env["value_b64"])
    assert len(codec.dumps(env)) <= max_bytes
    assert value.startswith(kept) and 0 < len(kept) < len(value) and env["value_truncated"]
    assert env["value_bytes"] == len(value) and env["value_sha256"] == hashlib.sha256(value).hexdigest()


def test_a_limit_the_envelope_alone_exceeds_keeps_no_value_bytes() -> None:
    env = _letter(value=b"x" * 100, max_bytes=100)
    assert env["value_b64"] == "" and env["value_truncated"] and env["value_bytes"] == 100


def test_the_message_and_the_items_are_capped() -> None:
    items = [{"index": i, "reason": "bad_value", "message": "m" * 1000} for i in range(codec.MAX_ITEMS + 50)]
    env = _letter(message="x" * 10_000, items=items)
    assert env["message"] == "x" * codec.MAX_MESSAGE
    assert len(env["items"]) == codec.MAX_ITEMS and env["items_total"] == codec.MAX_ITEMS + 50
    assert env["items"][7] == {"index": 7, "reason": "bad_value", "message": "m" * 200}
    assert _letter(items=[{"index": 0, "reason": "bad_ts"}])["items"] == [{"index": 0, "reason": "bad_ts", "message": ""}]
