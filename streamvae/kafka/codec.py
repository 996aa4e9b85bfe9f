"""Bytes <-> dicts at the Kafka edge (orjson), and the dead-letter envelope.

Parsing never raises anything but :class:`RecordError`, whose ``reason`` says why the
bytes are not a record (``REASONS`` of streamvae/core/records.py), and encoding never
fails: a string that UTF-8 cannot hold (a lone surrogate) is written escaped.

A dead letter always fits the producer's request size: the original key and value are
kept whole when they fit ``max_bytes`` and cut otherwise, with their full length and the
SHA-256 of the whole value in the envelope, so the original can still be identified.

Examples
--------
>>> env = dead_letter(b"k", b"{oops", "sensors", 2, 41, "not_json", "value is not valid JSON")
>>> env["reason"], env["offset"], env["value_sha256"][:12]
('not_json', 41, '935aaf3a54c0')
>>> base64.b64decode(env["value_b64"]), env["value_bytes"], env["value_truncated"]
(b'{oops', 5, False)
>>> loads(b"[" * 5000)
Traceback (most recent call last):
...
streamvae.errors.RecordError: value nests deeper than 1024 levels
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Sequence

import orjson

from streamvae.errors import RecordError

MAX_DEPTH = 1024  # orjson's limit; the stdlib fallback would recurse until RecursionError
MAX_MESSAGE = 500  # characters of a refusal message kept in a dead letter
MAX_ITEMS = 100  # bad items of a block listed in one dead letter (``items_total`` counts all)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(value: bytes) -> Any:
    """Parse JSON bytes, or raise :class:`RecordError` (``not_utf8``, ``too_deep``,
    ``out_of_range``, ``not_json``).

    orjson refuses numbers it cannot hold as a float (``1e999``, a 400-digit integer)
    although they are valid JSON, and lone surrogates (``"\\ud800"``); the stdlib parser,
    tried only after orjson failed, reads them, so the record is refused for the right
    reason (a value out of range, an entity that cannot be written out), not as "not JSON".
    """
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as e:
        first = str(e)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError("not_utf8", f"value is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if "depth limit" in first:
        raise RecordError("too_deep", f"value nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RecordError("too_deep", f"value nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        if "integer string conversion" in str(e):  # more digits than Python converts
            raise RecordError("out_of_range", "value holds an integer too long to be a number") from None
        raise RecordError("not_json", f"value is not valid JSON: {first}") from None


def _members(obj: Any) -> int:
    """Members of every object in ``obj`` plus the colons inside its strings: as many
    colons as its JSON text holds when no object repeats a name (and no ``\\u`` escape
    writes a colon)."""
    n, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if o.__class__ is dict:
            n += len(o) + "".join(o).count(":")
            stack += [v for v in o.values() if v.__class__ in _NESTED]
        elif o.__class__ is list:
            stack += [v for v in o if v.__class__ in _NESTED]
        elif o.__class__ is str:
            n += o.count(":")
    return n


_NESTED = (dict, list, str)


def _record_members(obj: Any) -> int:
    """At most :func:`_members` of ``obj``, and equal to it for the common record (a
    flat ``values`` object, the other members numbers or strings), without a walk."""
    if obj.__class__ is not dict:
        return 0
    vals = obj.get("values")
    n = len(obj) + (len(vals) + "".join(vals).count(":") if vals.__class__ is dict else 0)
    for k in ("entity", "ts"):
        v = obj.get(k)
        if v.__class__ is str:
            n += v.count(":")
    return n


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise RecordError("duplicate_key", f"an object names {ascii(name[:60])} more than once; which value "
                              "counts is not defined (RFC 8259), so the record is refused")
        seen.add(name)
    return out


def check_unique(value: bytes, obj: Any) -> None:
    """Raise :class:`RecordError` ``duplicate_key`` if an object of ``value`` (the JSON
    text ``obj`` was parsed from) names a member twice: parsers keep the last one
    silently, so ``{"values": {"a": 1, "a": "x"}}`` would pass as ``{"a": "x"}``, and
    ``{"entity": "p1", "entity": "p2"}`` as p2.

    Cheap for every record: each member writes one colon, so the text can hold a repeat
    only if it has more colons than ``obj`` has members plus colons inside strings; only
    then (or when a ``\\u`` escape could hide a colon) is the text parsed again, by the
    stdlib, to find the name. For the common record the members are counted without
    walking it (timeit, one record of four features: about a quarter of a walk's time).

    >>> check_unique(b'{"a": 1, "a": 2}', {"a": 2})
    Traceback (most recent call last):
    ...
    streamvae.errors.RecordError: an object names 'a' more than once; ...
    >>> check_unique(b'{"ts": "07:00:00", "a": 1}', {"ts": "07:00:00", "a": 1})
    """
    colons = value.count(b":")
    if b"\\u" not in value and (colons <= _record_members(obj) or colons <= _members(obj)):
        return
    try:
        json.loads(value, object_pairs_hook=_unique)
    except RecordError:
        raise
    except RecursionError:
        raise RecordError("too_deep", "value nests deeper than the parser can follow") from None
    except ValueError:  # a text the first parse read (a lone surrogate, 1e999): no repeat to name
        return


def _escape(obj: Any) -> Any:
    """``obj`` with every string that UTF-8 cannot encode written with backslash escapes."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {_escape(k): _escape(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_escape(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    """JSON bytes; never fails on text: lone surrogates are escaped (``\\ud800`` as text)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return orjson.dumps(_escape(obj), option=orjson.OPT_SERIALIZE_NUMPY)


def dead_letter(key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int, reason: str,
                message: str, items: Sequence[dict[str, Any]] = (), max_bytes: int = 1_000_000) -> dict[str, Any]:
    """The original key and value (base64), where they came from, and why they were refused.

    ``items``: for a block of readings, the bad ones (``index``, ``reason``, ``message``),
    at most ``MAX_ITEMS`` listed. ``max_bytes``: the envelope, encoded, stays under it:
    the key is cut to 1 KiB and the value to the room the rest leaves (``*_truncated``)."""
    env: dict[str, Any] = {
        "key_b64": None if key is None else base64.b64encode(key[:1024]).decode(),
        "key_truncated": key is not None and len(key) > 1024,
        "value_b64": None,
        "value_bytes": None if value is None else len(value),
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "value_truncated": False,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "items": [{**it, "message": str(it.get("message", ""))[:200]} for it in items[:MAX_ITEMS]],
        "items_total": len(items),
    }
    if value is not None:
        room = max(0, (max_bytes - len(dumps(env)) - 8) // 4 * 3)  # 8: the quotes and "true" for "null"
        env["value_b64"] = base64.b64encode(value[:room]).decode()
        env["value_truncated"] = len(value) > room
    return env
