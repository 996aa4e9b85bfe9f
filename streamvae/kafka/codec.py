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
from typing import Any

import orjson


def loads(value: bytes) -> Any:
    """Parse JSON bytes; raises ``orjson.JSONDecodeError`` (a ValueError)."""
    return orjson.loads(value)


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
