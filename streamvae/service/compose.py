"""Everything the daemon runs, built in one place from the configuration and the model.

The streaming pipeline comes from :func:`streamvae.core.compose.build_pipeline` (the one
replay and the evaluations use too); around it the daemon adds the record intake, the
commit positions, the hot swap (when ``model.path`` is a registry), the retraining
worker (when retraining or a buffer is configured) and the checkpoints, restored here
from the last checkpoint when there is one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from streamvae.config import Config
from streamvae.core.clock import Clock
from streamvae.core.compose import Detector, build_pipeline, max_gap
from streamvae.core.pipeline import StreamPipeline
from streamvae.core.records import RecordDecoder
from streamvae.kafka.offsets import PartitionOffsets
from streamvae.registry import Registry, is_registry
from streamvae.service.batch import BatchStep
from streamvae.service.checkpoint import Checkpoints
from streamvae.service.hotswap import HotSwap
from streamvae.service.intake import Intake
from streamvae.service.metrics import Metrics
from streamvae.service.retrain import RetrainWorker

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"  # in retrain.state_dir when threshold.state_file is unset


@dataclass
class Parts:
    pipeline: StreamPipeline
    decoder: RecordDecoder
    offsets: PartitionOffsets
    step: BatchStep
    swapper: HotSwap | None
    retrainer: RetrainWorker | None
    checkpoints: Checkpoints


def checkpoint_path(cfg: Config) -> str | None:
    """Where the daemon's state goes: ``threshold.state_file``, else a file in
    ``retrain.state_dir``, else nowhere (the state is relearnt after a restart)."""
    if cfg.threshold.state_file:
        return cfg.threshold.state_file
    return str(Path(cfg.retrain.state_dir) / CHECKPOINT_FILE) if cfg.retrain.state_dir else None


def assemble(cfg: Config, det: Detector, metrics: Metrics, config_path: str | None, clock: Clock) -> Parts:
    pipeline = build_pipeline(cfg, det)
    decoder = RecordDecoder(det.names, cfg.records.entities, max_future_s=cfg.records.max_future_s)
    offsets = PartitionOffsets(keep=det.config.window - 1, horizon=max_gap(cfg, det.config) or 3600.0)
    step = BatchStep(Intake(decoder, cfg.records.max_record_bytes), pipeline, offsets)
    swapper = None
    if is_registry(cfg.model.path):
        swapper = HotSwap(cfg, Registry(cfg.model.path), metrics, det, clock=clock)
        log.info("serving model %s, CURRENT of registry %s; listening for promotions on %s",
                 pipeline.model_version, cfg.model.path, cfg.topics.control)
    r = cfg.retrain
    retrainer = None
    if r.enabled or r.buffer == "kafka" or r.state_dir:
        retrainer = RetrainWorker(cfg, config_path, det.config.window, det.config.n_features, metrics, clock=clock)
    checkpoints = Checkpoints(checkpoint_path(cfg))
    ck = checkpoints.loaded
    if ck is not None:
        if ck.model_version == pipeline.model_version:
            pipeline.restore(ck.pipeline)
            log.info("state restored from %s (checkpoint %d: %d entities, %d accepted baselines, %d open episodes)",
                     checkpoints.path, ck.seq, len(pipeline.thresholds), len(pipeline.baselines or ()),
                     pipeline.episodes.open_count())
        else:
            log.info("the checkpoint in %s is for model %s; thresholds start from this model's held-out scores",
                     checkpoints.path, ck.model_version)
        if retrainer is not None and ck.lifecycle:
            retrainer.restore(ck.lifecycle)
    return Parts(pipeline, decoder, offsets, step, swapper, retrainer, checkpoints)
