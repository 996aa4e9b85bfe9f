"""A Kafka message's bytes -> readings, or why not: the one door records come in by.

:meth:`Intake.decode` never raises. Every way a message can be wrong (too large, not
UTF-8, nested too deep, not JSON, a name given twice in one object, a number out of
range, a name that cannot be written out, a reading from the future...) comes back as a
:class:`RecordError` with its reason, and anything unforeseen as ``internal_error``
naming the exception's type: one bad record becomes one dead letter, never a daemon
that exits and reads it again after its restart.

Examples
--------
>>> from streamvae.core.records import RecordDecoder
>>> intake = Intake(RecordDecoder(["temp"]), max_record_bytes=10_000)
>>> readings, why = intake.decode(None, b'{"entity": "p1", "ts": 1, "values": {"temp": 2}}')
>>> [(r.entity, r.ts) for r in readings], why
([('p1', 1.0)], None)
>>> intake.decode(None, b'{"entity": "p1", "ts": 1, "values": {"temp": 1' + b"0" * 400 + b'}}')[1].reason
'out_of_range'
>>> intake.decode(None, b"[" * 5_000)[1].reason
'too_deep'
"""

from __future__ import annotations

import numpy as np

from streamvae.core.jsonrecord import parser
from streamvae.core.pipeline import Reading
from streamvae.core.records import RecordDecoder
from streamvae.errors import RecordError
from streamvae.kafka import codec


class Intake:
    """Decode messages for ``decoder``; refuse values over ``max_record_bytes`` unread.

    The common record is read in C (streamvae/core/jsonrecord.py) when the extension is
    built; ``fast=False``, or a record the C reader is not sure of, takes the Python path."""

    def __init__(self, decoder: RecordDecoder, max_record_bytes: int, fast: bool = True) -> None:
        self.decoder = decoder
        self.max_record_bytes = max_record_bytes
        self.fast = parser(list(decoder.index), decoder.max_entity_len) if fast else None

    def decode(self, key: bytes | None, value: bytes | None, now: float | None = None) -> tuple[list[Reading], RecordError | None]:
        """The message's good readings and the reason for what was refused (None: nothing).

        ``now``: the wall clock, for the ``ts_in_future`` rule (None: not applied)."""
        fast, dec = self.fast, self.decoder
        try:
            if fast is not None and value is not None and len(value) <= self.max_record_bytes:
                got = fast.parse(value, key)
                if got is not None:
                    entity, ts, row = got
                    soon = now is None or ts <= now + dec.max_future_s
                    if soon and (dec.entities is None or entity in dec.entities):
                        return [Reading(entity, ts, np.frombuffer(row, np.float32))], None
            if value is None:
                raise RecordError("not_json", "message has no value")
            if len(value) > self.max_record_bytes:
                raise RecordError("too_large", f"value is {len(value)} bytes; the limit is "
                                  f"records.max_record_bytes={self.max_record_bytes}")
            obj = codec.loads(value)
            codec.check_unique(value, obj)
            text_key = None
            if key is not None:
                try:
                    text_key = key.decode("utf-8")
                except UnicodeDecodeError:
                    raise RecordError("bad_key", "the message key is not valid UTF-8") from None
            return self.decoder.decode_items(obj, text_key, now)
        except RecordError as e:
            return [], e
        except Exception as e:  # last resort: a record must never take the daemon down
            return [], RecordError("internal_error", f"{type(e).__name__}: {str(e)[:300]}")
