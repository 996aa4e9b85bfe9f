"""Bytes <-> dicts at the Kafka edge (orjson), and the dead-letter envelope.

Examples
--------
>>> env = dead_letter(b"k", b"{oops", "sensors", 2, 41, "not_json", "value is not valid JSON")
>>> sorted(env)
['key_b64', 'message', 'offset', 'partition', 'reason', 'topic', 'value_b64']
>>> base64.b64decode(env["value_b64"])
b'{oops'
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(value: bytes) -> Any:
    """Parse JSON bytes; raises ValueError when they are not JSON.

    orjson refuses numbers it cannot hold as a float (``1e999``) although they are valid
    JSON; the stdlib parser, tried only after orjson failed, reads them as infinity so
    the record is refused for the right reason (a non-finite value), not as "not JSON".
    """
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value, parse_constant=_reject_constant)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def dead_letter(key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int, reason: str, message: str) -> dict[str, Any]:
    """The original key and value (base64), where they came from, and why they were refused."""
    return {
        "key_b64": None if key is None else base64.b64encode(key).decode(),
        "value_b64": None if value is None else base64.b64encode(value).decode(),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "message": message,
    }
