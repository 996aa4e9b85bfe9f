"""A record batch's records read in one C call instead of one Python call each.

kafka-python reads every record of a fetched batch in Python (``DefaultRecordBatch``'s
``_read_msg``: 6-10 us a record here, on the daemon's main thread). :func:`install`
makes iterating a batch call ``streamvae/kafka/_records.c`` once for all its records
(~0.65 us each) and hand back the same fields. Everything else stays kafka-python's:
the batch's CRC check, its decompression, aborted transactions, and control batches,
whose one record still goes through kafka-python's own reader.

It is installed for kafka-python 3.0 only (the version streamvae pins), and only where
the extension was built (``pip install -e .`` compiles it; without a C compiler the
install goes on without it and kafka-python reads as before). A malformed record raises
kafka-python's ``CorruptRecordError`` after the records before it, as its own reader
does; the message says what was wrong in this reader's words.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any, Iterator, NamedTuple

import kafka
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """One record of a batch: the fields kafka-python's consumer reads of its
    ``DefaultRecord``; built in C (``_records.read``)."""

    size_in_bytes: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def checksum(self) -> None:
        """Message format v2 has one CRC per batch (checked by kafka-python), none per record."""
        return None

    def validate_crc(self) -> bool:
        """Always true: see :attr:`checksum`."""
        return True


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("streamvae.kafka._records")
    except ImportError:
        return None


_C = _load()
_ORIGINAL_ITER = DefaultRecordBatch.__iter__


def _records(batch: Any) -> Iterator[Any]:
    """``iter(batch)`` for a ``DefaultRecordBatch``: its remaining records, read at once."""
    batch._maybe_uncompress()
    if batch.is_control_batch:  # one record; kafka-python's fetcher reads it with next(batch)
        return batch  # type: ignore[no-any-return]
    assert _C is not None
    try:
        records, pos, error = _C.read(batch._buffer, batch._pos, batch._num_records - batch._next_record_index,
                                      batch.base_offset, batch.first_timestamp, batch.max_timestamp,
                                      batch.timestamp_type, Record)
    except ValueError as e:  # the position or count in the batch's header
        raise CorruptRecordError(f"Found invalid record structure: {e}") from None
    batch._pos = pos
    batch._next_record_index += len(records)
    if error is not None:  # as kafka-python: the records before the bad one, then the error
        return _then_raise(records, CorruptRecordError(f"Found invalid record structure: {error}"))
    if pos != len(batch._buffer):
        return _then_raise(records, CorruptRecordError(f"{len(batch._buffer) - pos} unconsumed bytes after all "
                                                       "records consumed"))
    return iter(records)


def _then_raise(records: list[Record], error: Exception) -> Iterator[Record]:
    yield from records
    raise error


def supported() -> bool:
    """Whether :func:`install` would take effect: the extension is built and kafka-python is 3.0."""
    return _C is not None and kafka.__version__.startswith("3.0.")


def install() -> bool:
    """Make iterating any ``DefaultRecordBatch`` read its records in C (idempotent);
    returns whether it did (see :func:`supported`)."""
    if not supported():
        return False
    if DefaultRecordBatch.__iter__ is not _records:
        DefaultRecordBatch.__iter__ = _records
        log.debug("Kafka records are read by streamvae.kafka._records")
    return True


def uninstall() -> None:
    """Give iteration back to kafka-python's reader (for tests and comparisons)."""
    DefaultRecordBatch.__iter__ = _ORIGINAL_ITER
