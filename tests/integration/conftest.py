"""The integration tests' shared fixtures: ONE broker and one trained model for the whole
session, and per test its topics (``kenv``), the daemons it started (``daemons``) and,
for a test that stops it, a broker of its own (``own_broker``).

They live here, not in harness.py, because pytest registers a fixture once per module it
is found in: a ``scope="session"`` fixture that each test module imports from a helper
module is a separate fixture in each of them, so every module started its own broker and
trained its own model (about 13 s of setup per module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from harness import DaemonProc, Env, started_broker

from streamvae.testing.broker import broker_module
from streamvae.testing.proof.plant import train_model


@pytest.fixture(scope="session")
def broker_mod() -> Any:
    return broker_module()


@pytest.fixture(scope="session")
def broker(broker_mod: Any) -> Iterator[Any]:
    yield from started_broker()


@pytest.fixture
def own_broker() -> Iterator[Any]:
    """A LocalBroker of the test's own, which it may stop and restart (the session's
    serves the other tests)."""
    yield from started_broker()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained by the real `streamvae train` on normal data."""
    return train_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def kenv(broker: Any) -> Iterator[Env]:
    e = Env(broker.bootstrap)
    yield e
    e.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProc]]:
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.close()
