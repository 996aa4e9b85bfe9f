"""The daemon's metrics: prometheus-client metrics in one registry per daemon.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (not the process-wide one), so
a test can build several daemons in one process; ``/metrics`` renders it with
``generate_latest`` (streamvae/service/http.py). Names follow Prometheus' conventions:
the prefix ``streamvae_``, base units in the name (``_seconds``, ``_records``),
``_total`` on every counter, a count since start is a counter (never a gauge).

What costs what, since the daemon calls these between its batches:

- per batch (:meth:`Metrics.batch_done`): a few increments, two histogram observations
  and one vectorised pass over the batch's record timestamps for the produce-to-score
  latency (:class:`BulkHistogram`: one ``searchsorted`` per batch instead of one locked
  ``observe`` per record; every record is counted once);
- per poll (:meth:`Metrics.after_poll`): the consumer lag, at most every
  ``LAG_EVERY_S``, from the highwater kafka-python learned from its last fetch response
  (no request is sent);
- the threshold quantiles across entities, a pass over every entity's tracker, at most
  every ``THRESHOLDS_EVERY_S``.

Examples
--------
>>> m = Metrics()
>>> m.alerts.labels(kind="open").inc()
>>> m.get("alerts_total", kind="open")
1.0
>>> sorted(n for n in m.names() if n.startswith("streamvae_batch_records"))
['streamvae_batch_records_bucket', 'streamvae_batch_records_count', 'streamvae_batch_records_sum']
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily, Metric

from streamvae.core.bank import ThresholdBank
from streamvae.kafka.readahead import lag

NAMESPACE = "streamvae"
LAG_EVERY_S = 1.0
THRESHOLDS_EVERY_S = 5.0  # a pass over every entity's tracker: ~0.5 us each
THRESHOLD_QUANTILES = ("0.5", "0.9", "0.99", "1")  # "1": the largest
QUANTILES = [float(q) for q in THRESHOLD_QUANTILES]

BATCH_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
BATCH_RECORDS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
RETRAIN_SECONDS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class BulkHistogram:
    """A histogram fed a whole array at a time (a prometheus-client custom collector).

    ``observe_many(values)`` adds every value, each once, with one ``searchsorted``.
    The produce-to-score latency of a 2,000-record batch, timestamps gathered
    (:func:`latencies`) and binned, costs about 0.1 us a record; one
    ``Histogram.observe`` call per record cost 2.7 us each (both timed with
    ``timeit`` on the 2-core development machine). Exposed as ``<name>_bucket``
    (cumulative, ``le`` inclusive), ``<name>_count`` and ``<name>_sum``.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = f"{NAMESPACE}_{name}"
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        idx = np.searchsorted(self.bounds, values, side="left")  # first bound >= value
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cum, total = np.cumsum(self._counts), self._sum
        les = [str(float(b)) for b in self.bounds] + ["+Inf"]
        return [HistogramMetricFamily(self.name, self.documentation, buckets=list(zip(les, cum.astype(float).tolist())),
                                      sum_value=total)]


class Metrics:
    """Every metric one daemon exports, in its own registry (``registry``).

    The other modules move them directly (``m.alerts.labels(kind="open").inc()``);
    :meth:`batch_done` and :meth:`after_poll` are the daemon's two calls.
    """

    def __init__(self) -> None:
        # Counters and histograms would also export a `_created` timestamp series each:
        # noise for Prometheus (one more series apiece) and for every reader of /metrics.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry()

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=NAMESPACE, registry=r)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, namespace=NAMESPACE, registry=r, buckets=buckets)

        # records and batches (delivered batches: one read again after a failed delivery counts again)
        self.records = counter("records_total", "Records consumed, in delivered batches")
        self.records_rebuilt = counter("records_rebuilt_total", "Records read again after a restart only to rebuild "
                                       "open windows (already learned)")
        self.windows_scored = counter("windows_scored_total", "Windows scored")
        self.batches = counter("batches_total", "Batches delivered")
        self.batch_duration = histogram("batch_duration_seconds", "Time to process, deliver and commit one batch",
                                        BATCH_SECONDS)
        self.last_batch_duration = gauge("last_batch_duration_seconds", "Time the latest batch took")
        self.batch_records = histogram("batch_records", "Records per batch", BATCH_RECORDS)
        self.score_latency = BulkHistogram("score_latency_seconds", "Per record: from its Kafka timestamp to its batch "
                                           "being delivered (scored, alerts acknowledged)", LATENCY_SECONDS, r)
        # what went out
        self.alerts = counter("alerts_total", "Alerts published, by kind", ["kind"])
        self.alerts_suppressed_duplicate = counter("alerts_suppressed_duplicate_total", "Alerts computed again whose id "
                                                   "was already published, not sent again")
        self.dead_letters = counter("dead_letters_total", "Records refused and sent to the dead-letter topic, by reason",
                                    ["reason"])
        self.input_rejected = gauge("input_rejected", "1 while most input records are refused (the dead-letter guard)")
        self.input_rejected_episodes = counter("input_rejected_episodes_total", "Times the dead-letter guard raised its alarm")
        # Kafka
        self.poll_errors = counter("poll_errors_total", "Polls that raised")
        self.delivery_failures = counter("delivery_failures_total", "Batches whose alerts or dead letters were not "
                                         "acknowledged (the state went back to the last checkpoint)")
        self.commit_failures = counter("commit_failures_total", "Offset commits that failed")
        self.consumer_lag = gauge("consumer_lag_records", "Records in the partition after the consumer's position "
                                  "(highwater of the last fetch - position)", ["topic", "partition"])
        # learned state
        self.live_entities = gauge("live_entities", "Entities with windows in progress")
        self.open_episodes = gauge("open_episodes", "Alert episodes open now")
        self.entity_threshold = gauge("entity_threshold", "Score threshold in effect across the entities the thresholds "
                                      "know (their own tracker, else the global one), at these quantiles (1: the largest)",
                                      ["quantile"])
        self.changes_accepted = counter("changes_accepted_total", "Persisting changes accepted as an entity's new normal")
        self.clock_resets = counter("clock_resets_total", "Entity clocks that stepped back and began a new window sequence")
        self.unknown_feature_values = counter("unknown_feature_values_total", "Values of features the model does not have "
                                              "(ignored)")
        self.checkpoint_failures = counter("checkpoint_failures_total", "Checkpoints that could not be written")
        # the model
        self.model = Info("model", "The model serving", namespace=NAMESPACE, registry=r)
        self.model_swaps = counter("model_swaps_total", "Hot swaps to another model version")
        self.model_swap_failures = counter("model_swap_failures_total", "Model versions that could not be swapped in, "
                                           "by reason", ["reason"])
        self.model_swap_load_seconds = gauge("model_swap_load_seconds", "Time the latest swapped-in model took to load")
        self.model_swap_delay_seconds = gauge("model_swap_delay_seconds", "From the latest promotion to its model serving")
        # retraining
        self.retrains_started = counter("retrains_started_total", "Retrain jobs started")
        self.retrains = counter("retrains_total", "Retrain jobs ended, by result", ["result"])
        self.retrain_duration = histogram("retrain_duration_seconds", "From a retrain job's start to its verdict",
                                          RETRAIN_SECONDS)
        self.retrain_running = gauge("retrain_running", "1 while a retrain job runs")
        self.model_behind_plant = gauge("model_behind_plant", "1 while the serving model came in behind the plant "
                                        "(more than 1% of the recent windows at its swap, or of its first "
                                        "min_windows x sample_every windows, scored above its own training "
                                        "threshold): another retrain is due")
        self.retrain_buffer_windows = gauge("retrain_buffer_windows", "Normal windows in the retraining buffer")
        self.retrain_anomaly_windows = gauge("retrain_anomaly_windows", "Confirmed-anomaly windows kept for the gate")

        self._seen: dict[int, float] = {}  # per counter whose total another object keeps: the total last seen
        self._lag_at = -float("inf")
        self._lagging: set[tuple[str, str]] = set()
        self._thresholds_at = -float("inf")

    # -- the daemon's calls ------------------------------------------------------------------
    def batch_done(self, out: Any, batch: Mapping[Any, Sequence[Any]], pipeline: Any, seconds: float, now: float,
                   unknown_values: int) -> None:
        """A delivered batch: ``out`` its ``BatchOutcome``, ``batch`` its records (with
        their Kafka ``timestamp`` in ms), ``seconds`` what it took, ``now`` the wall clock
        (unix seconds), ``unknown_values`` the decoder's count since start."""
        self.records.inc(out.records)
        self.records_rebuilt.inc(out.rebuilt)
        self.windows_scored.inc(len(out.result.scored))
        self.batches.inc()
        self.batch_duration.observe(seconds)
        self.last_batch_duration.set(seconds)
        self.batch_records.observe(out.records)
        self.score_latency.observe_many(latencies(batch, now))
        self.live_entities.set(len(pipeline.assembler))
        self.open_episodes.set(pipeline.episodes.open_count())
        self.count_to(self.changes_accepted, pipeline.accepted_)
        self.count_to(self.clock_resets, pipeline.assembler.clock_resets_)
        self.count_to(self.unknown_feature_values, unknown_values)
        if abs(now - self._thresholds_at) >= THRESHOLDS_EVERY_S:
            self._thresholds_at = now
            q = threshold_quantiles(pipeline.thresholds)
            for name, v in zip(THRESHOLD_QUANTILES, q if q is not None else ()):
                self.entity_threshold.labels(quantile=name).set(v)

    def after_poll(self, consumer: Any, commit_failures: int, now: float) -> None:
        """After every poll: commit failures (``Commits.failures_``, since start) and, at
        most every ``LAG_EVERY_S`` of ``now`` (any clock in seconds), the lag per
        assigned partition that has had a fetch response."""
        self.count_to(self.commit_failures, commit_failures)
        if abs(now - self._lag_at) < LAG_EVERY_S:
            return
        self._lag_at = now
        lagging = set()
        for tp in consumer.assignment():
            n = lag(consumer, tp, timeout_ms=100)
            if n is None:
                continue
            key = (str(tp.topic), str(tp.partition))
            self.consumer_lag.labels(*key).set(n)
            lagging.add(key)
        for key in self._lagging - lagging:  # revoked: its series goes
            self.consumer_lag.remove(*key)
        self._lagging = lagging

    # -- reading them back ---------------------------------------------------------------------
    def get(self, name: str, **labels: str) -> float:
        """The sample ``streamvae_<name>`` with exactly these labels; 0 if absent (tests, tools)."""
        v = self.registry.get_sample_value(f"{NAMESPACE}_{name}", labels)
        return 0.0 if v is None else v

    def names(self) -> set[str]:
        """Every sample name this registry can export, whether or not it has a sample yet
        (a labelled metric has none until a label set is used)."""
        return set(exported_names(self.registry.collect()))

    def count_to(self, counter: Counter, total: float) -> None:
        """Move a counter to a total another object keeps. A total that went back (state
        restored from a checkpoint) is the new base: the counter never goes down."""
        seen = self._seen.get(id(counter), 0.0)
        if total > seen:
            counter.inc(total - seen)
        self._seen[id(counter)] = total


def exported_names(families: Iterable[Metric]) -> Iterator[str]:
    """The sample names of metric families by their type: a counter's ``_total``, a
    histogram's ``_bucket``/``_count``/``_sum``, an info's ``_info``, a gauge's own name."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    for fam in families:
        for s in suffixes.get(fam.type, ("",)):
            yield fam.name + s


def latencies(batch: Mapping[Any, Sequence[Any]], now: float) -> npt.NDArray[np.float64]:
    """Per record of ``batch``: ``now`` minus its Kafka timestamp, in seconds, at least 0
    (a producer's clock ahead of this host's). Records without a timestamp (-1, message
    format v0) are left out."""
    ts = np.fromiter((r.timestamp for recs in batch.values() for r in recs), dtype=np.float64)
    ts = ts[ts >= 0]
    return np.maximum(now - ts / 1000.0, 0.0)


def threshold_quantiles(bank: ThresholdBank) -> npt.NDArray[np.float64] | None:
    """The thresholds in effect across the entities ``bank`` keeps state for (an
    entity's own tracker, else the global one) at ``THRESHOLD_QUANTILES``; None before
    any threshold exists. Reads the bank's trackers, which it does not list publicly."""
    own = np.fromiter((v for v in (t.get() for t in bank._own.values()) if v is not None), dtype=np.float64)
    g = bank.global_.get()
    if g is None:
        return np.asarray(np.quantile(own, QUANTILES), dtype=np.float64) if own.size else None
    rest = max(len(bank) - own.size, 0 if own.size else 1)  # no entity yet: the one every entity would get
    return np.asarray(np.quantile(np.concatenate([own, np.full(rest, g)]), QUANTILES), dtype=np.float64)
