"""A synthetic plant: a multi-entity sensor feed with labelled, injected anomalies (NumPy only).

Every entity (``pump-01``, ``pump-02``, ...) is a pump of one fleet with its own operating
point, drawn from ``plant`` and its index alone, so the same plant can be trained on with
one ``seed`` and monitored live with another. One latent *load* drives the correlated
sensors; anomalies of every kind of :mod:`streamvae.lifecycle.inject` are placed after a
warm-up, never overlapping on one entity. This module is the simulator's public face
(``streamvae simulate``, the demo and the tests import from it); the parts live in:

====================================== ====================================================
:mod:`streamvae.offline.feedspec`      the anomaly spec (``--anomalies``) and its parser
:mod:`streamvae.offline.feedplant`     operating points, and how every sensor follows the load
:mod:`streamvae.offline.feedepisodes`  where the episodes go and what each kind does
:mod:`streamvae.offline.feedsim`       :class:`SensorFeed`: the load over time, records, truth
:mod:`streamvae.offline.feedcsv`       the feed, and normal training data, as CSV files
====================================== ====================================================

Measured once against this project's VAE (window 60, trained 30 epochs on
``write_training_csvs(entities=4, seconds=7200)``, then ``streamvae replay --model`` over
``SensorFeed(4, 4.0, 7200, "all:2", seed=12)`` written by ``write_csv``): windows overlapping
a spike, level_shift, drift, noise_burst or broken_correlation were flagged 75-97 % of the
time; stuck and dead never were. A dead sensor is missing data, which the model leaves out
of the likelihood by design; a value stuck inside the noise band for 60 s looks normal
(a longer ``duration`` lets the cycle move away from it).

The normal data do not depend on the anomalies: with one ``seed`` the feed outside the
episodes is the same with or without them (only ``temp`` lags a broken_correlation surge
for a few minutes, as it lags any load change).

Examples
--------
>>> feed = SensorFeed(entities=3, rate=3.0, duration=600, anomalies="level_shift,dead", seed=1)
>>> feed.n_records, [e.kind for e in feed.episodes]
(1800, ['dead', 'level_shift'])
>>> first = next(iter(feed.records()))
>>> first["entity"], sorted(first["values"]) == sorted(FEATURES)
('pump-01', True)
"""

from __future__ import annotations

from streamvae.offline.feedcsv import write_csv, write_training_csvs
from streamvae.offline.feedepisodes import (
    BURST_FACTOR,
    DECOUPLED,
    DRIFT_STD,
    SHIFT_STD,
    SPIKE_STD,
    STUCK_FEATURES,
    SURGE_LOAD,
    Episode,
)
from streamvae.offline.feedplant import FEATURES
from streamvae.offline.feedsim import DEFAULT_START, SensorFeed
from streamvae.offline.feedspec import KINDS, AnomalySpec, parse_anomalies

__all__ = [
    "BURST_FACTOR", "DECOUPLED", "DEFAULT_START", "DRIFT_STD", "FEATURES", "KINDS", "SHIFT_STD", "SPIKE_STD",
    "STUCK_FEATURES", "SURGE_LOAD", "AnomalySpec", "Episode", "SensorFeed", "parse_anomalies", "write_csv",
    "write_training_csvs",
]
