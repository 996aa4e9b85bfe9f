"""What to learn and when: the model lifecycle, one API that the daemon and replay drive.

=========================== ==================================================================
:mod:`.loop`                :class:`Lifecycle`: observe / due / started / candidate / finished
:mod:`.reservoir`           bounded window store, shared fairly between entities
:mod:`.normal`              the normal-window buffer (sampling, episode margins)
:mod:`.fleet`               fleet-wide shift detection (a new operating point, not a fault)
:mod:`.bank`                windows of confirmed episodes, for the gate
:mod:`.trigger`             drift / new operating point / behind / count / schedule triggers
:mod:`.behind`              whether a model that just swapped in is behind the plant
:mod:`.learn`               which buffered windows a retrain learns
:mod:`.candidate`           candidate training (TensorFlow, lazily, through streamvae.model)
:mod:`.gate`                synthetic anomalies, buffer screening, the rule and its reasons
:mod:`.recalibrate`         which windows recalibrate thresholds after a swap
:mod:`.job`                 one retrain against the registry: train, gate, store, promote
:mod:`.inject`              the anomaly kinds, shared by the gate and the simulator
:mod:`.samples`             buffers rebuilt from the samples topic's records
:mod:`.state`               state as arrays (checkpoints, exported buffers)
=========================== ==================================================================

No Kafka here; TensorFlow only where a candidate is trained or loaded. This file imports
nothing, so the simulator can take :mod:`.inject` alone.
"""
