"""Hot swap: move a running daemon to the registry version named by control events,
loading it in a background thread and switching between two batches."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamvae.config import Config
from streamvae.core.clock import SYSTEM, Clock
from streamvae.core.pipeline import BatchResult, StreamPipeline
from streamvae.errors import StreamvaeError
from streamvae.kafka.control import ACTIONS, ControlError, ControlListener
from streamvae.lifecycle.recalibrate import RecalibrationWindows, above_own, install, recalibration_scores
from streamvae.registry import Registry
from streamvae.service import failpoints
from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)

# Hot swap. A swap costs one artifact load + warm-up + one scoring call over the recent
# normal windows, all in a background thread; the loop only polls the control topic
# (~0.4 ms a call, so at most every CONTROL_POLL_S) and swaps two references.
CONTROL_POLL_S = 0.25
CURRENT_CHECK_S = 30.0  # re-read the registry's CURRENT: a lost event or a start-up race heals
LISTENER_RETRY_S = 30.0


@dataclass
class _Load:
    """One version being loaded in the background; the thread fills in det/scores or error."""

    version: str
    requested_at: float  # unix time of the promotion (the event's "at"), for the delay metric
    windows: Any  # (N, W, F) snapshot of the recalibration windows, or None
    thread: threading.Thread | None = None
    det: Any = None
    scores: Any = None
    error: str | None = None
    reason: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class HotSwap:
    """Moves a daemon to the registry version named by control events, between batches.

    The daemon calls :meth:`note_batch` with every batch's result and
    :meth:`tick` between batches. A requested version is loaded in a background thread
    (artifact checks, warm-up, scoring of the recalibration windows, chosen by
    :mod:`streamvae.lifecycle.recalibrate`'s rule, replay's too); only when that is
    complete does :meth:`tick` hand it to ``pipeline.swap_model``, so no record is ever
    scored by a half-loaded model. A version that fails to load, or whose features or
    window differ, leaves the old model serving; the failure is logged and counted in
    ``model_swap_failures_total{reason}``. Only the latest request counts: a rollback
    that arrives while a promotion loads supersedes it. The control topic is polled at
    most every ``CONTROL_POLL_S`` and the registry's CURRENT re-read every
    ``CURRENT_CHECK_S`` seconds of ``clock``.
    """

    def __init__(self, cfg: Config, registry: Registry, metrics: Metrics, det: Any, clock: Clock = SYSTEM) -> None:
        self.cfg = cfg
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.names = list(det.names)
        self.window, self.stride = det.config.window, det.config.stride
        self.recent = RecalibrationWindows()
        self.listener: ControlListener | None = None
        self.loading: _Load | None = None
        self.wanted: str | None = None
        self.wanted_at = 0.0
        self.failed: set[str] = set()  # not retried from CURRENT checks; an explicit event retries
        self.above_own_ = float("nan")  # the last model swapped in: share of the recent windows above its own threshold
        self._next_listen = 0.0
        self._next_poll = 0.0
        self._next_check = 0.0

    def note_batch(self, res: BatchResult, fleet_shift: bool) -> None:
        """Keep a batch's windows for the next recalibration (``fleet_shift``: most of the
        fleet alarms together after this batch; see
        :class:`~streamvae.lifecycle.recalibrate.RecalibrationWindows`)."""
        self.recent.observe(res, fleet_shift)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _listen(self, now: float) -> None:
        self._next_listen = now + LISTENER_RETRY_S
        try:
            self.listener = ControlListener(self.cfg.kafka, self.cfg.topics.control)
        except ControlError as e:
            log.warning("cannot listen for model changes (%s); retrying in %.0fs, meanwhile CURRENT is re-read every %.0fs",
                        e, LISTENER_RETRY_S, CURRENT_CHECK_S)
            return
        self._next_check = 0.0  # a promotion may have landed before the listener started

    def _request(self, version: str, at: float, why: str) -> None:
        if version != self.wanted:
            log.info("model %s requested (%s)", version, why)
        self.wanted, self.wanted_at = version, at

    def tick(self, pipeline: StreamPipeline) -> Any | None:
        """Between two batches: read control events, start or finish a load; the new
        detector when the pipeline has just switched to it, else None."""
        now = self.clock.monotonic()
        if self.listener is None and now >= self._next_listen:
            self._listen(now)
        if self.listener is not None and now >= self._next_poll:
            self._next_poll = now + CONTROL_POLL_S
            for ev in self.listener.poll():
                if ev.type in ACTIONS:
                    self.failed.discard(ev.version)
                    self._request(ev.version, ev.at or self.clock.time(), f"{ev.type} event")
                else:
                    log.debug("control event ignored: %s", ev)
        if now >= self._next_check:
            self._next_check = now + CURRENT_CHECK_S
            self._check_current(pipeline.model_version)
        job = self.loading
        if job is not None and job.thread is not None and not job.thread.is_alive():
            self.loading = None
            return self._finish(job, pipeline)
        if job is None and self.wanted is not None:
            if self.wanted == pipeline.model_version:
                self.wanted = None
            else:
                self._start(self.wanted, self.wanted_at)
        return None

    def _check_current(self, serving: str) -> None:
        try:
            cur = self.registry.current()
        except (StreamvaeError, OSError) as e:
            log.warning("cannot read the registry's CURRENT (%s)", e)
            return
        busy = self.loading.version if self.loading is not None else None
        if cur and cur != serving and cur not in self.failed and cur not in (self.wanted, busy):
            self._request(cur, self.clock.time(), f"registry CURRENT is {cur}, no control event seen")

    def _start(self, version: str, at: float) -> None:
        windows = self.recent.windows()  # a snapshot: the loop keeps appending
        job = _Load(version, at, windows)
        job.thread = threading.Thread(target=self._load, args=(job,), name=f"load-{version}", daemon=True)
        self.loading = job
        job.thread.start()

    def _load(self, job: _Load) -> None:
        """Background thread: everything slow, nothing shared with the loop but ``job``."""
        from streamvae.model import artifact  # TensorFlow is already loaded: the daemon serves a model

        t0 = time.perf_counter()
        try:
            det = artifact.load(self.registry.path(job.version))
            mc = det.config
            if list(det.names) != self.names or (mc.window, mc.stride) != (self.window, self.stride):
                job.reason = "incompatible"
                job.error = (f"features {list(det.names)} window {mc.window}/{mc.stride} differ from the serving model's "
                             f"{self.names} window {self.window}/{self.stride}; restart the daemons to change them")
                return
            det.warmup(self.cfg.group.max_poll_records)
            job.info["recent"] = 0 if job.windows is None else len(job.windows)
            job.det, job.scores = det, recalibration_scores(det, job.windows)
            job.info["above_own"] = above_own(det, job.scores)
        except StreamvaeError as e:
            job.reason, job.error = "load", str(e)
        except Exception as e:  # a failing TensorFlow or NumPy call must not take the daemon down: old model serves on
            log.exception("loading model %s failed", job.version)
            job.reason, job.error = "load", repr(e)
        finally:
            job.seconds = time.perf_counter() - t0
            job.windows = None

    def _finish(self, job: _Load, pipeline: StreamPipeline) -> Any | None:
        if job.error is None and self.wanted != job.version:
            log.info("model %s loaded but no longer requested (now %s); discarded", job.version, self.wanted)
            return None
        if self.wanted == job.version:
            self.wanted = None
        old = pipeline.model_version
        if job.error is None:
            failpoints.reach("during_swap")
            try:
                install(pipeline, job.det, job.version, job.scores)
            except (StreamvaeError, ValueError) as e:  # swap_model changes nothing when it raises
                job.reason, job.error = "recalibrate", f"thresholds cannot be recalibrated on its scores: {e}"
        if job.error is not None:
            self.failed.add(job.version)
            self.metrics.model_swap_failures.labels(reason=job.reason).inc()
            log.error("model %s NOT loaded, still serving %s: %s", job.version, old, job.error)
            return None
        delay = max(0.0, self.clock.time() - job.requested_at)
        self.above_own_ = job.info.get("above_own", float("nan"))
        self.metrics.model.info({"version": job.version})
        self.metrics.model_swaps.inc()
        self.metrics.model_swap_load_seconds.set(job.seconds)
        self.metrics.model_swap_delay_seconds.set(delay)
        log.info("now serving model %s (was %s): loaded in %.2fs, %.2fs after the promotion; thresholds recalibrated "
                 "on its held-out training windows and %d recent windows: fleet threshold %s, its own training "
                 "threshold %s, %.1f%% of the recent windows above its own", job.version, old, job.seconds, delay,
                 job.info.get("recent", 0), _num(pipeline.thresholds.get()), _num(getattr(job.det, "threshold_", None)),
                 100 * job.info.get("above_own", float("nan")))
        return job.det


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:.1f}"
