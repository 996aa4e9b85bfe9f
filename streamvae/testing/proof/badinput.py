"""The kinds of bad input of the corpus (streamvae/testing/proof/corpus.py), and how the
daemon judges a message.

Each kind is a function of a :class:`Gen` (a seeded ``random.Random``, the wall clock,
the feed's entities) that makes one message (key, value), registered in :data:`KINDS`
with the reasons it may be refused with (none: a hostile record the daemon must take)
and how many of it a corpus holds at most. :func:`property_records` draws messages from
``hypothesis`` strategies, reproducibly; :func:`verdict` says what the daemon's intake
makes of a message.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, Iterator

from streamvae.core.records import RecordDecoder
from streamvae.errors import RecordError
from streamvae.kafka import codec
from streamvae.testing.proof.plant import FEATURES, T0, series

TOTAL = 10_000  # bad records in a corpus
PROPERTY_SHARE = 0.1  # of them drawn from hypothesis strategies (about 5 ms a draw; half of the draws are kept)
MAX_RECORD_BYTES = 1_000_000  # records.max_record_bytes, the daemon's default
LONG = "1" + "0" * 399  # an integer literal of 400 digits
Msg = tuple[bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class Bad:
    """One record of the corpus: its kind, key and value, and the reasons it may be
    refused with (empty: a hostile record the daemon must accept). A block with one bad
    item (``block``) has good readings too: ``block`` names its entity, ``good`` their ts."""

    kind: str
    key: bytes | None
    value: bytes | None
    reasons: frozenset[str]
    block: str | None = None
    good: tuple[float, ...] = ()


class Gen:
    """What a kind draws from: a seeded ``random.Random``, the wall clock, the feed's entities."""

    def __init__(self, seed: int, now: float, entities: list[str], steps: int) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.entities = entities
        self.steps = steps
        self.n = 0  # a counter for entity names of their own

    def entity(self) -> str:
        return self.rng.choice(self.entities)

    def values(self) -> dict[str, Any]:
        return {f: round(self.rng.uniform(-1.5, 2.5), 4) for f in FEATURES}

    def rec(self, who: str | None = None, key: str | None | bool = True, **fields: Any) -> Msg:
        """A record of entity ``who`` (default: one of the feed's) with ``fields`` replaced,
        keyed by its entity (``key=None``: no key; a string: that key)."""
        e = self.entity() if who is None else who
        body: dict[str, Any] = {"entity": e, "ts": T0 + self.rng.randrange(self.steps), "values": self.values()}
        body.update(fields)
        k = e if key is True else key
        return (None if k is None or k is False else str(k).encode("utf-8", "surrogatepass")), json.dumps(body).encode()

    def edit(self, change: Callable[[bytes], bytes]) -> Msg:
        """A record of one of the feed's entities, its bytes changed by ``change``."""
        k, v = self.rec()
        return k, change(v or b"")

    def spliced(self, entity: str | None = None, values: str | None = None, ts: str | None = None) -> Msg:
        """A record written by hand: ``values`` and ``ts`` are JSON text put in as is."""
        e = self.entity() if entity is None else entity
        v = values if values is not None else json.dumps(self.values())
        t = ts if ts is not None else str(T0 + self.rng.randrange(self.steps))
        return e.encode(), f'{{"entity": "{e}", "ts": {t}, "values": {v}}}'.encode()

    def own(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


KINDS: dict[str, tuple[frozenset[str], int, Callable[[Gen], Msg]]] = {}  # name -> (reasons, cap, make)


def add(name: str, reasons: str | tuple[str, ...], make: Callable[[Gen], Msg], cap: int = 0) -> None:
    """Register a kind made by a lambda (see :func:`kind`)."""
    KINDS[name] = (frozenset([reasons] if isinstance(reasons, str) else reasons), cap, make)


def kind(*reasons: str, cap: int = 0) -> Callable[[Callable[[Gen], Msg]], Callable[[Gen], Msg]]:
    """Register a kind: its refusal reasons (none: must be accepted) and at most ``cap``
    records of it in a corpus (0: its share of the rest)."""
    def register(make: Callable[[Gen], Msg]) -> Callable[[Gen], Msg]:
        KINDS[make.__name__] = (frozenset(reasons), cap, make)
        return make
    return register


def _late_offset(g: Gen) -> str:  # the right time, written with an offset of -23:59: a day ahead
    d = datetime.fromtimestamp(g.now, timezone.utc).replace(tzinfo=timezone(-timedelta(hours=23, minutes=59)))
    return d.isoformat()


def _without(g: Gen, member: str) -> Msg:
    e = g.entity()
    body = {"entity": e, "ts": T0 + g.rng.randrange(g.steps), "values": g.values()}
    del body[member]
    return e.encode(), json.dumps(body).encode()


def _dup(g: Gen, member: str) -> Msg:
    e, vals = g.entity(), json.dumps(g.values())
    parts = {"entity": f'"entity": "{e}"', "ts": f'"ts": {T0 + g.rng.randrange(g.steps)}', "values": f'"values": {vals}'}
    parts[member] += ", " + {"entity": f'"entity": "{g.entity()}x"', "ts": '"ts": "yesterday"', "values": '"values": {"a": "hot"}'}[member]
    return e.encode(), ("{" + ", ".join(parts.values()) + "}").encode()


# -- encodings and bytes ----------------------------------------------------------------------
add("utf16", "not_utf8", lambda g: g.edit(lambda v: v.decode().encode("utf-16")))
add("latin1", "not_utf8", lambda g: (None, json.dumps({"entity": "pümpé", "ts": T0, "values": g.values()},
                                                      ensure_ascii=False).encode("latin-1")))
add("invalid_utf8", "not_utf8", lambda g: (lambda e: (e.encode(), b'{"entity": "' + e.encode() + b'", "ts": 1, "values": '
                                                               b'{"a": "\xff\xfe"}}'))(g.entity()))
add("overlong_utf8", "not_utf8", lambda g: (None, b'{"entity": "pump\xc0\xaf", "ts": 1, "values": {"a": 1}}'))
add("utf8_bom", "not_json", lambda g: g.edit(lambda v: b"\xef\xbb\xbf" + v))
add("random_binary", ("not_utf8", "not_json"), lambda g: (g.entity().encode(), b"\xff" + g.rng.randbytes(g.rng.randrange(1, 200))))

# -- structure -----------------------------------------------------------------------------------
add("truncated", "not_json", lambda g: g.edit(lambda v: v[: g.rng.randrange(1, 30)]))
add("trailing_garbage", "not_json", lambda g: g.edit(lambda v: v + b" }{"))
add("single_quotes", "not_json", lambda g: g.edit(lambda v: v.replace(b'"', b"'")))
add("not_an_object", "not_object", lambda g: (g.entity().encode(), g.rng.choice([b"[1, 2]", b'"e000"', b"42", b"null", b"[]"])))
add("deep_array", "too_deep", lambda g: (None, b"[" * (n := g.rng.randrange(1100, 6000)) + b"]" * n), cap=40)
add("deep_value", "too_deep", lambda g: g.spliced(values='{"a": ' + "[" * (n := g.rng.randrange(1100, 3000)) + "]" * n + "}"),
    cap=40)
add("nested_value", "bad_value", lambda g: g.rec(values={"a": {"v": 1.0}, "b": 0.5}))
add("nested_block", "missing_ts", lambda g: g.rec(g.own("nest"), readings=[{"readings": [{"ts": T0, "values": {"a": 1.0}}]}]))

# -- numbers ---------------------------------------------------------------------------------------
add("long_int_value", "out_of_range", lambda g: g.spliced(values='{"a": ' + LONG + "}"))
add("long_int_ts", "bad_ts", lambda g: g.spliced(ts=LONG))
add("beyond_float32", "out_of_range", lambda g: g.rec(values={"a": g.rng.choice([1e39, -1e39, 1e300, -1.7e308, 5e38])}))
add("overflow_literal", "non_finite", lambda g: g.spliced(values='{"a": 1e999}'))
add("nan_token_value", "not_json", lambda g: g.spliced(values='{"a": ' + g.rng.choice(["NaN", "Infinity", "-Infinity"]) + "}"))
add("nan_token_ts", "not_json", lambda g: g.spliced(ts=g.rng.choice(["NaN", "Infinity", "-Infinity"])))

# -- strings (and other types) where numbers belong --------------------------------------------------
add("string_value", "bad_value", lambda g: g.rec(values={"a": g.rng.choice(["12.5", "hot", "", "NaN", "1e5"]), "b": 1.0}))
add("bool_value", "bad_value", lambda g: g.rec(values={"a": g.rng.choice([True, False]), "b": 1.0}))
add("list_value", "bad_value", lambda g: g.rec(values={"a": [1.0, 2.0], "b": 1.0}))
add("string_ts", "bad_ts", lambda g: g.rec(ts=g.rng.choice(["yesterday", "", "2026-13-45T99:00:00Z", "12:00", "now"])))
add("wrong_type_ts", "bad_ts", lambda g: g.rec(ts=g.rng.choice([True, False, None, [T0], {"s": T0}])))
add("values_not_object", "bad_values", lambda g: g.rec(values=g.rng.choice([[1.0, 2.0, 3.0, 4.0], "1,2,3,4", 7.0])))

# -- duplicate JSON keys --------------------------------------------------------------------------------
for _m in ("entity", "ts", "values"):
    add(f"duplicate_{_m}", "duplicate_key", partial(_dup, member=_m))
add("duplicate_feature", "duplicate_key", lambda g: g.spliced(values='{"a": 1.0, "b": 2.0, "a": 3.0}'))

# -- size: 1 MB payloads ------------------------------------------------------------------------------------
add("one_megabyte", "too_large", lambda g: (lambda e: (e.encode(), b'{"entity": "' + e.encode() + b'", "pad": "'
                                                       + b"y" * 1_000_000 + b'"}'))(g.entity()), cap=3)
add("junk_900k", "not_json", lambda g: (g.entity().encode(), b"x" * 900_000), cap=3)  # its dead letter is cut to fit
add("big_bad_value", "bad_value", lambda g: g.rec(values={"a": "z" * 990_000}), cap=3)  # under the limit, refused read

# -- empty values ---------------------------------------------------------------------------------------------
add("empty_message", "not_json", lambda g: (g.entity().encode(), g.rng.choice([b"", b" ", b"\n\t "])))
add("tombstone", "not_json", lambda g: (g.entity().encode(), None))
add("empty_object", ("missing_ts", "missing_entity"), lambda g: (g.rng.choice([None, g.entity().encode()]), b"{}"))
add("empty_entity", "bad_entity", lambda g: g.rec("", key=None))
add("empty_values", "no_known_feature", lambda g: g.rec(values={}))
add("null_values", "missing_values", lambda g: g.rec(values=None))
add("no_values", "missing_values", lambda g: _without(g, "values"))
add("empty_readings", "bad_readings", lambda g: g.rec(g.own("empty"), readings=g.rng.choice([[], {}, "none", None])))

# -- null keys, keys that disagree with the entity -------------------------------------------------------------
add("null_key_null_entity", "missing_entity", lambda g: g.rec(None, key=None, entity=None))
add("null_key_no_entity", "missing_entity", lambda g: (None, json.dumps({"ts": T0, "values": g.values()}).encode()))
add("empty_key", "entity_key_mismatch", lambda g: g.rec(key=""))
add("key_mismatch", "entity_key_mismatch", lambda g: g.rec(key=g.rng.choice(["pump-0", "e000 ", "E000", "e0000", "e000\x00"])))
add("key_not_utf8", "bad_key", lambda g: (b"e\xff\xfe", g.rec()[1]))

# -- entities: control characters, paths, not text --------------------------------------------------------------
add("entity_control_chars", "bad_entity",
    lambda g: g.rec(g.rng.choice(["pump\x00", "\x1b[31mred", "pump-0\n", "a\tb", "\x7f", "bell\x07"]), key=None))
add("entity_lone_surrogate", "bad_entity", lambda g: g.rec(g.rng.choice(["\ud800", "pump\udfff-1", "\udc00x"]), key=None))
add("entity_invisible", "bad_entity", lambda g: g.rec(g.rng.choice(["\u202epump", "pump\u200b", "\u2028", "a\ufeffb"]), key=None))
add("entity_path_nul", "bad_entity", lambda g: g.rec("../" * 20 + "etc/passwd\x00", key=None))
add("entity_too_long", "bad_entity", lambda g: g.rec("p" * g.rng.randrange(257, 5000), key=None))
add("entity_not_text", "bad_entity",
    lambda g: g.rec(None, key=None, entity=g.rng.choice([17, 1.5, True, ["e000"], {"id": "e000"}])))

# -- features ------------------------------------------------------------------------------------------------------
add("thousands_unknown_features", "no_known_feature",
    lambda g: g.rec(values={f"x{i:05d}": 1.0 for i in range(g.rng.randrange(1000, 5000))}), cap=30)

# -- time: far in the future or past --------------------------------------------------------------------------------
add("ts_far_future", "ts_in_future", lambda g: g.rec(ts=g.rng.choice([4e9, 1e300, "9999-12-31T23:59:59Z", g.now + 3e7])))
add("ts_offset_a_day_ahead", "ts_in_future", lambda g: g.rec(ts=_late_offset(g)))
add("ts_in_milliseconds", "ts_in_future", lambda g: g.rec(ts=(T0 + g.rng.randrange(g.steps)) * 1000))
add("ts_far_past", "ts_too_old", lambda g: g.rec(ts=g.rng.choice([0, 1, 3600.5, -1e9, "1970-01-01T00:00:00Z",
                                                                  "0001-01-01T00:00:00Z", T0 - 86_400 * 400])))
add("ts_in_minutes", "ts_too_old", lambda g: g.rec(ts=(T0 + g.rng.randrange(g.steps)) / 60))
add("no_ts", "missing_ts", lambda g: _without(g, "ts"))

# -- blocks of readings -----------------------------------------------------------------------------------------------
add("block_too_many", "bad_readings",
    lambda g: g.rec(g.own("huge"), readings=[{"ts": T0 + i, "values": {"a": 0.5}} for i in range(10_001)]), cap=3)
add("block_items_not_objects", "bad_readings", lambda g: g.rec(g.own("items"), readings=[1, "x", None]))
BAD_ITEMS: list[tuple[str, Callable[[Gen], Any]]] = [
    ("bad_value", lambda g: {"values": {"a": "hot"}}),
    ("missing_ts", lambda g: {"values": {"a": 1.0}}),
    ("ts_in_future", lambda g: {"ts": g.now + 86_400, "values": {"a": 1.0}}),
    ("out_of_range", lambda g: {"values": {"b": -1e39}}),
    ("bad_readings", lambda g: 5),
    ("no_known_feature", lambda g: {"values": {"zz": 1.0}}),
]


def block_one_bad_item(g: Gen) -> Bad:
    """A block of 20 to 60 readings of an entity of its own; one item is bad, the rest scored."""
    e, m = g.own("block"), g.rng.randrange(20, 61)
    x = series(m, seed=g.rng.randrange(1 << 30))
    items: list[Any] = [{"ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))} for i, row in enumerate(x)]
    bad = g.rng.randrange(m)
    reason, make = g.rng.choice(BAD_ITEMS)
    items[bad] = make(g)
    if reason != "missing_ts" and isinstance(items[bad], dict):
        items[bad].setdefault("ts", T0 + bad)
    good = tuple(float(T0 + i) for i in range(m) if i != bad)
    return Bad("block_one_bad_item", e.encode(), json.dumps({"entity": e, "readings": items}).encode(),
               frozenset([reason]), e, good)


# -- hostile but valid: the daemon must take these -------------------------------------------------------------------------
add("valid_entity_like_a_path", (), lambda g: g.rec(g.rng.choice(["../../etc/passwd", "/var/lib/x", "C:\\Windows\\sys", "~root/.ssh",
                                                                  "%2e%2e%2f", "."]) + f"#{g.own('p')}"), cap=40)
add("valid_without_a_key", (), lambda g: g.rec(g.own("nokey"), key=None), cap=40)
add("valid_thousands_unknown_features", (), lambda g: g.rec(g.own("many"), values={"a": 0.5, **{f"u{i:05d}": 1.0 for i in range(3000)}}),
    cap=10)
add("valid_unicode_entity", (), lambda g: g.rec(g.own("ünïcødé-泵-🛠")), cap=40)


def verdict(key: bytes | None, value: bytes | None, decoder: RecordDecoder, now: float | None) -> tuple[int, str | None]:
    """(good readings, reason or None): what the daemon's intake (streamvae/service/intake.py,
    which this layer may not import; tests/unit/testing/test_corpus.py holds the two
    equal) says of a message."""
    try:
        if value is None:
            return 0, "not_json"
        if len(value) > MAX_RECORD_BYTES:
            return 0, "too_large"
        obj = codec.loads(value)
        codec.check_unique(value, obj)
        text_key = None if key is None else key.decode("utf-8")
        readings, err = decoder.decode_items(obj, text_key, now)
        return len(readings), None if err is None else err.reason
    except UnicodeDecodeError:
        return 0, "bad_key"
    except RecordError as e:
        return 0, e.reason
    except Exception as e:  # noqa: BLE001 (the intake's last resort)
        return 0, f"internal_error:{type(e).__name__}"


def property_records(n: int, seed: int, entities: list[str]) -> Iterator[Msg]:
    """``n`` messages drawn from hypothesis strategies, reproducibly (``@seed``, no example
    database, the generate phase only)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    weird = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates, controls, format characters
    scalar = st.none() | st.booleans() | st.integers() | st.floats() | weird
    anyjson = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(weird, c, max_size=4),
                           max_leaves=12)
    entity = st.sampled_from(entities) | weird | scalar
    record = st.fixed_dictionaries(
        {"entity": entity, "ts": st.floats() | st.integers() | weird | st.just(T0 + 5) | scalar,
         "values": st.dictionaries(st.sampled_from(FEATURES) | weird, scalar, max_size=5) | anyjson},
        optional={"readings": st.lists(anyjson | st.fixed_dictionaries({"ts": scalar, "values": anyjson}), max_size=3)})
    text = (anyjson | record).flatmap(lambda o: st.sampled_from([
        json.dumps(o), json.dumps(o, ensure_ascii=False), json.dumps(o, indent=1)[::-1]]))
    encoded = st.tuples(text, st.sampled_from(["utf-8", "utf-16", "latin-1", "cut"])).map(_encode)
    key = st.none() | st.binary(max_size=12) | st.sampled_from(entities).map(str.encode)
    message = st.tuples(key, st.binary(max_size=200) | encoded)
    got: list[Msg] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(message)
    def collect(m: Msg) -> None:
        got.append(m)

    collect()
    return iter(got)


def _encode(tv: tuple[str, str]) -> bytes:
    text, how = tv
    if how == "cut":
        return text.encode("utf-8", "surrogatepass")[: max(1, len(text) // 2)]
    return text.encode(how, "surrogatepass" if how != "latin-1" else "replace")


