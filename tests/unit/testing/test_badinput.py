"""The bad-input corpus (streamvae/testing/proof/corpus.py) against the daemon's own intake:
each record is judged by the corpus as the intake judges it, each kind is refused for its
reason, and the corpus is the same for the same seed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamvae.core.records import REASONS, RecordDecoder
from streamvae.core.windows import WindowAssembler
from streamvae.errors import RecordError
from streamvae.service.intake import Intake
from streamvae.testing.proof import corpus as C

NOW = time.time()
NAMES = [f"e{k:03d}" for k in range(6)]


@pytest.fixture(scope="module")
def built() -> tuple[list[C.Bad], list[C.Bad]]:
    return C.corpus(seed=3, now=NOW, entities=NAMES, steps=700, total=1_000)


def test_every_record_is_judged_by_the_corpus_as_the_daemons_intake_judges_it(built: tuple[list[C.Bad], list[C.Bad]]) -> None:
    bad, good = built
    intake = Intake(RecordDecoder(list(C.FEATURES), max_future_s=300.0), C.MAX_RECORD_BYTES)
    dec = RecordDecoder(list(C.FEATURES), max_future_s=300.0)
    for b in bad + good:
        readings, why = intake.decode(b.key, b.value, NOW)
        assert C.verdict(b.key, b.value, dec, NOW) == (len(readings), None if why is None else why.reason), b.kind


def test_each_kind_is_refused_with_its_reason_and_the_hostile_valid_ones_are_taken(built: tuple[list[C.Bad], list[C.Bad]]) -> None:
    bad, good = built
    intake = Intake(RecordDecoder(list(C.FEATURES), max_future_s=300.0), C.MAX_RECORD_BYTES)
    for b in bad:
        readings, why = intake.decode(b.key, b.value, NOW)
        if b.reasons == {"ts_too_old"}:  # the decoder takes it; the entity's clock refuses it
            asm = WindowAssembler(C.WINDOW, 1, len(C.FEATURES))
            asm.push(readings[0].entity, C.T0 + 700.0, np.zeros(len(C.FEATURES)))
            with pytest.raises(RecordError) as e:
                asm.push(readings[0].entity, readings[0].ts, readings[0].values)
            assert e.value.reason == "ts_too_old"
            continue
        assert why is not None and why.reason in b.reasons, (b.kind, why, b.value[:80] if b.value else None)
        assert len(readings) == len(b.good), b.kind
        assert why.reason in REASONS and why.reason != "internal_error"
    for b in good:
        assert intake.decode(b.key, b.value, NOW)[1] is None, b.kind


def test_the_corpus_is_deterministic_and_has_at_least_30_kinds(built: tuple[list[C.Bad], list[C.Bad]]) -> None:
    bad, good = built
    assert len(bad) == 1_000
    assert len({b.kind for b in bad} - {"property"}) >= 30
    again, _ = C.corpus(seed=3, now=NOW, entities=NAMES, steps=700, total=1_000)
    assert [(b.key, b.value) for b in again] == [(b.key, b.value) for b in bad]
    assert sum(b.kind == "property" for b in bad) == 100
