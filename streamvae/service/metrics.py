"""Counters and gauges, rendered in the Prometheus text format."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, by: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(labels.items())))] += by

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.gauges[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            return self.counters.get(key, self.gauges.get(key, 0.0))

    def render(self) -> str:
        lines = []
        with self._lock:
            items = [(k, v, "counter") for k, v in self.counters.items()] + [(k, v, "gauge") for k, v in self.gauges.items()]
        seen = set()
        for (name, labels), value, kind in sorted(items):
            if name not in seen:
                seen.add(name)
                lines.append(f"# TYPE streamvae_{name} {kind}")
            lab = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"streamvae_{name}{{{lab}}} {value:g}" if lab else f"streamvae_{name} {value:g}")
        return "\n".join(lines) + "\n"


def batch_metrics(m: Metrics, out: Any, pipeline: Any, seconds: float, unknown_values: int, commit_failures: int) -> None:
    """The counters and gauges one batch moves (``out``: its ``BatchOutcome``)."""
    m.inc("records_total", out.records)
    m.inc("records_rebuilt_total", out.rebuilt)
    m.inc("windows_scored_total", len(out.result.scored))
    m.inc("batches_total")
    m.set("last_batch_seconds", seconds)
    m.set("live_entities", len(pipeline.assembler))
    m.set("open_episodes", pipeline.episodes.open_count())
    m.set("changes_accepted", pipeline.accepted_)  # since start: persisting changes made an entity's new normal
    m.set("clock_resets", pipeline.assembler.clock_resets_)  # since start: steps back that began a new sequence
    m.set("unknown_feature_values", unknown_values)  # since start: values of features the model lacks
    m.set("commit_failures", commit_failures)
