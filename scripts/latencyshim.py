"""``python scripts/latencyshim.py OUT CONFIG``: ``streamvae run --config CONFIG``,
unmodified, with three methods wrapped from outside to time each poll (see
streamvae/testing/paced.py; a script, not a module of streamvae.testing, because it
reaches into the running daemon). At exit OUT holds, as JSON:

- ``batches``: per poll, [t poll returned, t windows scored, t batch done (alerts
  acknowledged, offsets handed to the commit)], wall clock in seconds, and per record
  [its ``sent_us`` header, its record timestamp in ms];
- ``alerts``: per alert the daemon published, [its id, the ``sent_us`` of the record that
  completed its window];
- ``cycles``: per poll that brought records, where the main thread's time went: [t poll
  returned (wall clock), then wall and main-thread CPU seconds of the poll
  (``ReadAhead.poll``, waiting for the broker included), of ``StreamPipeline.process``
  (decode, windows, score, thresholds, episodes) and of the whole ``Daemon.handle``
  (process, then alerts, delivery, commit, metrics), records in the batch, and the wall
  seconds of the batch's model calls (``VAEDetector.score``, on whichever thread)].

The wrappers add a list comprehension per poll, a dictionary per poll with alerts, and
four clock reads per wrapped call (~1 us).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's streamvae


def main(out_path: str, config: str) -> int:
    from streamvae.cli import main as cli
    from streamvae.core.pipeline import StreamPipeline
    from streamvae.kafka.readahead import ReadAhead
    from streamvae.model.detector import VAEDetector
    from streamvae.service.batch import BatchStep
    from streamvae.service.daemon import Daemon

    batches: list[Any] = []
    cycles: list[Any] = []
    last_poll = [0.0, 0.0]  # wall, CPU seconds of the last poll
    process_took = [0.0, 0.0]
    model_took = [0.0]
    alerts: list[tuple[str, int]] = []
    scored_at = [0.0]
    sources: list[Any] = []  # the last batch's alerts: (id, partition, offset of the record completing it)
    process, step, handle, poll = StreamPipeline.process, BatchStep.process, Daemon.handle, ReadAhead.poll
    score = VAEDetector.score

    def timed_score(self: Any, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = score(self, *a, **k)
        model_took[0] += time.perf_counter() - t0
        return out

    def timed_poll(self: Any, *a: Any, **k: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        got = poll(self, *a, **k)
        last_poll[:] = time.perf_counter() - t0, time.thread_time() - c0
        return got

    def timed_process(self: Any, *a: Any, **k: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        res = process(self, *a, **k)
        scored_at[0] = time.time()
        process_took[:] = time.perf_counter() - t0, time.thread_time() - c0
        return res

    def noted_step(self: Any, *a: Any, **k: Any) -> Any:
        out = step(self, *a, **k)
        if out.alerts:
            src = {(s.entity, s.end_ts): (tp, off) for s, tp, off in out.scored()}
            sources.extend((a.alert_id, *src.get((a.entity, a.window_end), (None, -1))) for a in out.alerts)
        return out

    def timed_handle(self: Any, consumer: Any, producer: Any, batch: Any) -> None:
        start, t0, c0 = time.time(), time.perf_counter(), time.thread_time()
        scored_at[0] = 0.0
        process_took[:] = 0.0, 0.0
        model_took[0] = 0.0
        sources.clear()
        handle(self, consumer, producer, batch)
        done = time.time()
        n = sum(map(len, batch.values()))
        cycles.append((start, *last_poll, *process_took, time.perf_counter() - t0, time.thread_time() - c0, n, model_took[0]))
        batches.append((start, scored_at[0], done,
                        [(int(r.headers[0][1]) if r.headers else 0, r.timestamp) for recs in batch.values() for r in recs]))
        for aid, tp, off in sources:
            rec = next((r for r in batch.get(tp, ()) if r.offset == off), None)
            if rec is not None and rec.headers:
                alerts.append((aid, int(rec.headers[0][1])))

    StreamPipeline.process = timed_process  # type: ignore[method-assign]
    BatchStep.process = noted_step  # type: ignore[method-assign]
    Daemon.handle = timed_handle  # type: ignore[method-assign]
    ReadAhead.poll = timed_poll  # type: ignore[method-assign]
    VAEDetector.score = timed_score  # type: ignore[method-assign]
    try:
        return cli(["run", "--config", config])
    finally:
        with open(out_path, "w") as fh:
            json.dump({"batches": batches, "alerts": alerts, "cycles": cycles}, fh)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
