"""streamvae.kafka.fastrecords: a batch's records read in C are kafka-python's records.

Valid batches (nulls, empty values, headers, gzip, log-append time) read exactly as
kafka-python reads them. Malformed ones (bytes of the records flipped, the batch cut
short; no CRC check, so they reach the reader) never crash and never raise anything but
``CorruptRecordError``: they give exactly what :func:`spec_read` (below, the protocol in
Python, as Kafka's Java reader has it) gives, the records before the bad one and then the
error. Where kafka-python's reader is laxer than the protocol (it reads the one-byte
attributes as a varint, and any varint up to 10 bytes), the two differ on such bytes.
"""

from __future__ import annotations

import gzip
import itertools
import random
from typing import Any

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from streamvae.kafka import fastrecords

pytestmark = pytest.mark.skipif(not fastrecords.supported(), reason="streamvae.kafka._records not built")

TP = TopicPartition("t", 0)
RECORDS_AT = 61  # a v2 batch's header size


@pytest.fixture(autouse=True)
def _restore() -> Any:
    yield
    fastrecords.uninstall()


def batch(rng: random.Random, n: int, codec: int = 0, log_append: bool = False) -> bytearray:
    b = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 24, offset=rng.randrange(1 << 30))
    for _ in range(n):
        headers = [(rng.choice(["h", "sent_us", "ключ", ""]), None if rng.random() < 0.3 else rng.randbytes(rng.randrange(9)))
                   for _ in range(rng.randrange(4))]
        b.append(timestamp=1_700_000_000_000 + rng.randrange(-10, 10_000), headers=headers,
                 key=None if rng.random() < 0.3 else rng.randbytes(rng.randrange(12)),
                 value=None if rng.random() < 0.2 else rng.randbytes(rng.choice([0, 5, 150, 2_000])))
    b.close()
    buf = bytearray(b.buffer())
    if log_append:
        buf[22] |= 0x08  # attributes (int16 at 21): the timestamp type bit
    return buf


def read(buf: bytes, fast: bool) -> tuple[list[Any], str | None]:
    """The consumer's records of ``buf`` as kafka-python's fetcher yields them, and the
    error that ended them (None: none)."""
    (fastrecords.install if fast else fastrecords.uninstall)()
    out: list[Any] = []
    try:
        out.extend(Fetcher.PartitionRecords(0, TP, MemoryRecords(bytes(buf)), check_crcs=False).record_iterator)
    except CorruptRecordError:
        return out, "corrupt"
    return out, None


@pytest.mark.parametrize("codec,log_append", [(0, False), (0, True), (1, False)])
def test_valid_batches_read_as_kafka_python_reads_them(codec: int, log_append: bool) -> None:
    rng = random.Random(codec * 2 + log_append)
    for n in (1, 2, 17, 300):
        buf = bytes(batch(rng, n, codec, log_append))
        mine, theirs = read(buf, fast=True), read(buf, fast=False)
        assert mine == theirs
        assert mine[1] is None and len(mine[0]) == n
        assert all(type(r.key) in (bytes, type(None)) for r in mine[0])
    if log_append:  # every record carries the batch's max timestamp
        assert {r.timestamp_type for r in mine[0]} == {1} and len({r.timestamp for r in mine[0]}) == 1


def test_the_records_before_a_bad_one_come_first_then_the_error() -> None:
    buf = batch(random.Random(7), 5)
    at = record_starts(buf)[3] + 2  # record 3's timestamp delta (after its length and attributes)
    buf[at:at + 11] = b"\xff" * 11  # a varint longer than 10 bytes
    mine, theirs = read(bytes(buf), fast=True), read(bytes(buf), fast=False)
    assert mine == theirs
    assert [r.offset - mine[0][0].offset for r in mine[0]] == [0, 1, 2] and mine[1] == "corrupt"
    fastrecords.install()
    with pytest.raises(CorruptRecordError, match="varint longer than its type allows"):
        list(Fetcher.PartitionRecords(0, TP, MemoryRecords(bytes(buf)), check_crcs=False).record_iterator)


def test_malformed_batches_read_as_the_protocol_says_and_never_crash() -> None:
    rng = random.Random(2026)
    errors = 0
    for _ in range(4_000):
        buf = batch(rng, rng.randrange(1, 6))
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(RECORDS_AT, len(buf))] = rng.randrange(256)
        if rng.random() < 0.3:
            buf = buf[: rng.randrange(RECORDS_AT, len(buf) + 1)]
        mine = read(bytes(buf), fast=True)
        assert mine == spec_read(bytes(buf))
        errors += mine[1] is not None
    assert errors > 500  # the mutations reach the checks (770 of these 4,000 end in an error)


def test_a_gzip_batch_is_decompressed_by_kafka_python_first() -> None:
    buf = bytes(batch(random.Random(3), 40, codec=1))
    assert gzip.decompress(buf[RECORDS_AT:])  # the records are compressed here
    assert read(buf, fast=True) == read(buf, fast=False)


# -- the protocol, in Python ------------------------------------------------------------


def record_starts(buf: bytearray) -> list[int]:
    """Where each record of an uncompressed, well-formed batch starts."""
    out, pos = [], RECORDS_AT
    while pos < len(buf):
        out.append(pos)
        length, pos = varint(buf, pos, 5)
        pos += length
    return out


def varint(buf: bytes | bytearray, pos: int, max_bytes: int) -> tuple[int, int]:
    v = 0
    for i in range(max_bytes):
        if pos >= len(buf):
            raise ValueError("truncated")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return (v >> 1) ^ -(v & 1), pos
    raise ValueError("too long")


def spec_read(buf: bytes) -> tuple[list[Any], str | None]:
    """Record batch v2 as Kafka's protocol defines it: one-byte attributes; varints of at
    most 5 bytes, the timestamp delta's 10; a negative length is null; each record exactly
    its length; the batch exactly its records."""
    mr = MemoryRecords(buf)
    out: list[Any] = []
    b = mr.next_batch()
    if b is None:
        return out, None
    base, first, count = b.base_offset, b.first_timestamp, b.records_count
    pos = RECORDS_AT
    try:
        for _ in range(count):
            length, pos = varint(buf, pos, 5)
            end = pos + length
            if length < 0 or end > len(buf) or pos >= end:
                raise ValueError("length")
            rec = buf[:end]
            pos += 1  # attributes
            ts, pos = varint(rec, pos, 10)
            off, pos = varint(rec, pos, 5)
            fields = []
            for _ in range(2):
                n, pos = varint(rec, pos, 5)
                if n > len(rec) - pos:
                    raise ValueError("bytes")
                fields.append(None if n < 0 else rec[pos:pos + n])
                pos += max(n, 0)
            nh, pos = varint(rec, pos, 5)
            if nh < 0 or nh > (len(rec) - pos) // 2:
                raise ValueError("headers")
            headers = []
            for _ in range(nh):
                n, pos = varint(rec, pos, 5)
                if n < 0 or n > len(rec) - pos:
                    raise ValueError("header key")
                hk = rec[pos:pos + n].decode("utf-8")
                pos += n
                n, pos = varint(rec, pos, 5)
                if n > len(rec) - pos:
                    raise ValueError("header value")
                headers.append((hk, None if n < 0 else rec[pos:pos + n]))
                pos += max(n, 0)
            if pos != end:
                raise ValueError("size")
            key, value = fields
            out.append((base + off, first + ts, key, value, headers))
        if pos != len(buf):
            raise ValueError("unconsumed")
    except ValueError:  # UnicodeDecodeError too
        return _as_consumer(out, buf), "corrupt"
    return _as_consumer(out, buf), None


def _as_consumer(rows: list[tuple[Any, ...]], buf: bytes) -> list[Any]:
    from kafka.consumer.fetcher import ConsumerRecord

    def size(headers: list[tuple[str, bytes | None]]) -> int:
        return sum(len(k.encode()) + (len(v) if v is not None else 0) for k, v in headers) if headers else -1

    recs = [ConsumerRecord("t", 0, 0, off, ts, 0, key, value, headers, None,
                           -1 if key is None else len(key), -1 if value is None else len(value), size(headers))
            for off, ts, key, value, headers in rows]
    return list(itertools.dropwhile(lambda r: r.offset < 0, recs))  # the fetcher's: before the fetch offset (0)
