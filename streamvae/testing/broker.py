"""The project's local Kafka broker, ``deploy/kafka/broker.py``, loaded by its path.

``deploy/`` is not a package, and a folder named ``kafka`` on ``sys.path`` would shadow
kafka-python, so the module is loaded from its file, once per process (kept in
``sys.modules``, so ``BrokerError`` is one class everywhere). It needs a source checkout:
an installed wheel has no ``deploy/``. ``scripts/kafka`` runs the same file as a command.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from streamvae.testing.procs import ROOT

BROKER_PY = ROOT / "deploy" / "kafka" / "broker.py"
_MODULE = "streamvae_kafka_broker"


def broker_module() -> ModuleType:
    """``deploy/kafka/broker.py`` as a module: ``LocalBroker``, ``BrokerError``, ``fetch_jars``."""
    mod = sys.modules.get(_MODULE)
    if mod is not None:
        return mod
    if not BROKER_PY.is_file():
        raise FileNotFoundError(f"{BROKER_PY} not found: the local broker needs a source checkout of streamvae")
    spec = importlib.util.spec_from_file_location(_MODULE, BROKER_PY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[_MODULE]
        raise
    return mod


def start_broker() -> Any:
    """A started ``LocalBroker`` (jars fetched once, KRaft formatted, ready on 127.0.0.1).

    Raises the module's ``BrokerError``, with the tail of the broker's log, when it cannot
    start; ``.bootstrap`` is its address, ``.stop()`` stops it.
    """
    return broker_module().LocalBroker().start()


def kafka_jars() -> Path:
    """The folder of the Kafka jars the local broker runs from (fetched into the cache once)."""
    return Path(broker_module().fetch_jars())


def use_broker(bootstrap: str | None) -> tuple[str, Any]:
    """The broker at ``bootstrap`` if one is given, else a ``LocalBroker`` started here:
    ``(address, the broker started or None)``; the caller stops what was started."""
    if bootstrap:
        return bootstrap, None
    broker = start_broker()
    return str(broker.bootstrap), broker
