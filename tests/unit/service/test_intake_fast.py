"""The C reader of the common record (streamvae/core/_jsonrecord.c) only ever skips work:
on every record, the intake gives with it exactly what it gives without it (the same
readings, bit for bit, or the same reason and message), and it does read the common
records itself."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamvae.core.jsonrecord import parser
from streamvae.core.records import RecordDecoder
from streamvae.service.intake import Intake

pytestmark = pytest.mark.skipif(parser(["a"], 8) is None, reason="streamvae.core._jsonrecord not built")

NAMES = ["s0", "s1", "temp", "rpm", "b:c"]
NOW = 1_700_000_000.0


def both(**kw: object) -> tuple[Intake, Intake]:
    def make(fast: bool) -> Intake:
        return Intake(RecordDecoder(NAMES, **kw), 10_000, fast=fast)  # type: ignore[arg-type]

    return make(True), make(False)


def outcome(intake: Intake, key: bytes | None, value: bytes | None, now: float | None) -> object:
    readings, why = intake.decode(key, value, now)
    return ([(r.entity, struct.pack("<d", r.ts), r.values.dtype.str, r.values.tobytes()) for r in readings],
            None if why is None else (type(why).__name__, why.reason, str(why)))


def same(key: bytes | None, value: bytes | None, now: float | None = NOW, **kw: object) -> bool:
    """Both paths agree on the record; True when the C reader read it itself."""
    fast, slow = both(**kw)
    assert outcome(fast, key, value, now) == outcome(slow, key, value, now), value
    assert fast.fast is not None and value is not None
    return fast.fast.parse(value, key) is not None


COMMON = [
    b'{"entity":"pump-001","ts":1700000000.0,"values":{"s0":0.926,"s1":-0.601,"temp":2.6636,"rpm":null}}',
    b' { "entity" : "p1" , "ts" : 1700000000 , "values" : { "rpm" : 5 , "s0" : -0 } } \n',
    b'{"values":{"temp":1e3,"s1":-2.5E-3},"ts":-0.0,"entity":"plant:3/pump 17"}',
    b'{"entity":"p1","ts":1.7e9,"values":{"b:c":3.4028234663852886e38,"s0":-3.4028234663852886e38}}',
    b'{"entity":"p1","ts":1.5,"values":{"s0":0.1234567890123456789,"s1":123456789012345}}',
    b'{"entity":"p1","ts":1.5,"values":{"s0":1.7976931348623157e-300,"s1":22e22,"temp":1e-22}}',
]

NOT_SURE = [
    b'{"entity":"p1","ts":1,"values":{"s0":1},"site":"x"}',  # another member
    b'{"entity":"p1","readings":[{"ts":1,"values":{"s0":1}}]}',
    b'{"entity":"p\\u0031","ts":1,"values":{"s0":1}}',  # an escape
    '{"entity":"pümp","ts":1,"values":{"s0":1}}'.encode(),  # not ASCII
    b'{"entity":"p\x7f","ts":1,"values":{"s0":1}}',  # not printable
    b'{"entity":"p\x01","ts":1,"values":{"s0":1}}',  # a control character: not JSON
    b'{"entity":"","ts":1,"values":{"s0":1}}',
    b'{"entity":"p1","entity":"p2","ts":1,"values":{"s0":1}}',
    b'{"entity":"p1","ts":1,"values":{"s0":1,"s0":"hot"}}',
    b'{"entity":"p1","ts":1,"values":{"s0":1,"x":2}}',  # an unknown name: counted by the Python path
    b'{"entity":"p1","ts":1,"values":{}}',
    b'{"entity":"p1","ts":1,"values":{"s0":true}}',
    b'{"entity":"p1","ts":1,"values":{"s0":"1"}}',
    b'{"entity":"p1","ts":1,"values":{"s0":[1]}}',
    b'{"entity":"p1","ts":"2026-11-23T07:00:00Z","values":{"s0":1}}',
    b'{"entity":"p1","ts":null,"values":{"s0":1}}',
    b'{"entity":"p1","ts":1,"values":null}',
    b'{"entity":"p1","ts":1,"values":{"s0":1e999}}',
    b'{"entity":"p1","ts":1,"values":{"s0":3.5e38}}',
    b'{"entity":"p1","ts":1,"values":{"s0":1e-400}}',
    b'{"entity":"p1","ts":1,"values":{"s0":4e-310}}',
    b'{"entity":"p1","ts":1,"values":{"s0":12345678901234567}}',
    b'{"entity":"p1","ts":1,"values":{"s0":01}}',
    b'{"entity":"p1","ts":1,"values":{"s0":1.}}',
    b'{"entity":"p1","ts":1,"values":{"s0":.5}}',
    b'{"entity":"p1","ts":1,"values":{"s0":+1}}',
    b'{"entity":"p1","ts":1,"values":{"s0":NaN}}',
    b'{"entity":"p1","ts":1,"values":{"s0":1}} x',
    b'{"entity":"p1","ts":1,"values":{"s0":1},}',
    b'{"entity":"p1","ts":1,"values":{"s0":1}',
    b'\xef\xbb\xbf{"entity":"p1","ts":1,"values":{"s0":1}}',
    b'[{"entity":"p1","ts":1,"values":{"s0":1}}]',
    b'{"ts":1,"values":{"s0":1}}',  # the entity from the key: the Python path
]


@pytest.mark.parametrize("value", COMMON)
def test_the_common_record_is_read_in_c_with_the_python_paths_result(value: bytes) -> None:
    assert same(None, value)
    entity = json.loads(value)["entity"].encode()
    assert same(entity, value)
    assert not same(entity + b"x", value)  # a key that differs: the Python path refuses it


@pytest.mark.parametrize("value", NOT_SURE)
def test_anything_else_goes_to_the_python_path(value: bytes) -> None:
    assert not same(None, value)


def test_what_needs_the_intakes_state_is_still_applied() -> None:
    value = b'{"entity":"p1","ts":1700000400.0,"values":{"s0":1}}'
    assert same(None, value)  # 400 s ahead: ts_in_future
    assert same(None, value, now=None)
    assert same(None, value, entities=["p2"])
    assert same(None, value, entities=["p1"])
    assert not same(None, value, max_entity_len=1)  # too long: the Python path says so
    fast, _ = both()
    assert fast.decode(None, value, NOW)[1].reason == "ts_in_future"  # type: ignore[union-attr]
    assert fast.decode(None, b"x" * 10_001, NOW)[1].reason == "too_large"  # type: ignore[union-attr]
    assert fast.decode(None, None, NOW)[1].reason == "not_json"  # type: ignore[union-attr]
    assert fast.fast is not None
    assert fast.fast.parse(bytearray(value), None) is None  # type: ignore[arg-type]  # not bytes: not sure
    bare = type(fast.fast).__new__(type(fast.fast))  # never initialised: no names to read by
    assert bare.parse(value, None) is None


def test_a_row_is_its_own_and_writable() -> None:
    fast, _ = both()
    value = b'{"entity":"p1","ts":1,"values":{"s0":1.5}}'
    (a,), _ = fast.decode(None, value)
    (b,), _ = fast.decode(None, value)
    a.values[0] = 9.0
    assert b.values[0] == 1.5 and math.isnan(b.values[1]) and a.values.shape == (len(NAMES),)


# -- random records: numbers by JSON's grammar, members in any order, half of them bad ----

digits = st.text("0123456789", min_size=1, max_size=18)
grammar = st.builds(lambda neg, i, f, e: f"{neg}{i.lstrip('0') or '0'}{f}{e}",
                    st.sampled_from(["", "-"]), digits,
                    st.one_of(st.just(""), digits.map(lambda d: "." + d)),
                    st.one_of(st.just(""), st.builds(lambda c, s, d: c + s + d[:3], st.sampled_from("eE"),
                                                     st.sampled_from(["", "+", "-"]), digits)))
good_numbers = st.one_of(grammar, st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
                         st.floats(min_value=-1e6, max_value=1e6).map(lambda v: f"{v:.4f}"),
                         st.integers(-10**16, 10**16).map(str), st.just("null"))
bad_numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                        st.integers(-10**20, 10**20).map(str),
                        st.sampled_from(["true", '"1.5"', "[1]", "{}", "1e999", "-1e-999", "01", "1.", ".5", "+1",
                                         "NaN"]))
good_entities = st.text("abcxyz0123456789-_:/. ", min_size=1, max_size=12)
bad_entities = st.one_of(st.text(max_size=12).map(lambda t: json.dumps(t, ensure_ascii=False)[1:-1]),
                         st.sampled_from(["p\\u0031", "p\x7f", "p\\\\", ""]))


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    """A common record, or (half of the time) one with something unusual or wrong."""
    odd = draw(st.booleans())
    numbers = st.one_of(good_numbers, bad_numbers) if odd else good_numbers
    if odd:
        odd_names = st.sampled_from([*NAMES, "x", "S0", "p\\u0031", "tëmp", ""])
        vals = draw(st.lists(st.tuples(odd_names, numbers), max_size=7))
    else:
        picked = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
        vals = [(n, draw(numbers)) for n in picked]
    members = {
        "entity": f'"{draw(st.one_of(good_entities, bad_entities) if odd else good_entities)}"',
        "ts": draw(st.one_of(numbers, st.just('"2026-11-23T07:00:00Z"')) if odd else grammar),
        "values": "{" + ",".join(f'"{n}":{v}' for n, v in vals) + "}",
    }
    order = draw(st.permutations(list(members)))
    drop = draw(st.sampled_from([None, None, "entity", "ts", "values"])) if odd else None
    extra = draw(st.sampled_from(["", "", ',"site":"a"', ',"ts":1'])) if odd else ""
    ws = draw(st.sampled_from(["", " ", "\n\t"]))
    body = f",{ws}".join(f'"{k}"{ws}:{ws}{members[k]}' for k in order if k != drop)
    text = f"{ws}{{{ws}{body}{extra}{ws}}}{ws}"
    entity = members["entity"][1:-1]
    key = draw(st.sampled_from([None, entity.encode("utf-8", "surrogatepass"), b"other"]))
    return key, text.encode("utf-8", "surrogatepass")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_on_random_records_both_paths_give_the_same(record: tuple[bytes | None, bytes]) -> None:
    same(*record)


def test_random_records_are_mostly_read_in_c() -> None:
    """The random test above is no test of the C reader if it declines everything."""
    rng = np.random.default_rng(5)
    read = 0
    for _ in range(500):
        vals = ",".join(f'"{n}":{v:.{rng.integers(0, 9)}f}' for n, v in zip(NAMES, rng.normal(0, 1e3, len(NAMES))))
        ts = NOW + rng.uniform(-1e5, 0)
        read += same(None, f'{{"entity":"p{rng.integers(100)}","ts":{ts},"values":{{{vals}}}}}'.encode())
    assert read == 500
