"""Helpers for the integration tests, the demo and the benchmarks (as numpy.testing is for NumPy).

- :mod:`~streamvae.testing.procs`: the daemon as a child process (start, readiness,
  /metrics, /healthz, stop, CPU time and memory), its config file;
- :mod:`~streamvae.testing.broker`: the project's local Kafka broker (deploy/kafka/broker.py);
- :mod:`~streamvae.testing.topics`: uuid-named topics, end offsets, the committed ``scored_to``;
- :mod:`~streamvae.testing.truth`: alert episodes against the simulator's ground truth;
- :mod:`~streamvae.testing.paced`: a live feed at a fixed rate, the daemon's latency and CPU;
  :mod:`~streamvae.testing.pacedtable`: their tables, as scripts/bench_e2e.py prints them;
- :mod:`~streamvae.testing.net`: a free port; :mod:`~streamvae.testing.threads`: one thread.

No other streamvae package imports this one (tests/unit/test_layers.py). Importing it
loads kafka-python, not NumPy or TensorFlow.
"""

from __future__ import annotations

from streamvae.testing.broker import broker_module, start_broker, use_broker
from streamvae.testing.net import free_port
from streamvae.testing.procs import DaemonError, DaemonProc, cpu_seconds, run_cmd, streamvae_cmd, write_config
from streamvae.testing.topics import Cluster, Topics
from streamvae.testing.truth import MATCH_MARGIN_S, Score, Truth, score_span

__all__ = ["MATCH_MARGIN_S", "Cluster", "DaemonError", "DaemonProc", "Score", "Topics", "Truth", "broker_module",
           "cpu_seconds", "free_port", "run_cmd", "score_span", "start_broker", "streamvae_cmd", "use_broker",
           "write_config"]
