"""The common record's JSON read in one C call, where the extension was built.

``streamvae/core/_jsonrecord.c`` reads the shape nearly every feed sends, ``{"entity":
..., "ts": <number>, "values": {<feature>: <number or null>, ...}}`` with plain ASCII
names, in ~1 us instead of the ~12 us of orjson, the duplicate-name check and
:class:`~streamvae.core.records.RecordDecoder`. On anything else it answers None, "not
sure", and the caller takes that Python path, which gives every answer it always gave:
the C reader only ever skips work, never changes a result (tests/unit/service/
test_intake_fast.py compares the two on random and hand-made records).

``pip install -e .`` compiles it (setup.py); without a C compiler the install goes on
without it and :func:`parser` returns None.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, Sequence


class Parser(Protocol):
    def parse(self, value: bytes, key: bytes | None, /) -> tuple[str, float, bytearray] | None:
        """(entity, ts, the row as float32 bytes, NaN where no value came), or None: not sure."""


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("streamvae.core._jsonrecord")
    except ImportError:
        return None


_C = _load()


def parser(feature_names: Sequence[str], max_entity_len: int) -> Parser | None:
    """A C reader for records of these features, or None where the extension is not built."""
    if _C is None or not feature_names:
        return None
    p: Parser = _C.Parser(list(feature_names), max_entity_len)
    return p
