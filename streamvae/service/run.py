"""``streamvae run`` and ``streamvae config check``."""

from __future__ import annotations

import argparse
import json
import logging

from streamvae.config import load_config
from streamvae.service import logs

log = logging.getLogger(__name__)


def config_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    logs.apply(cfg, getattr(args, "debug", False))
    print(json.dumps(cfg.redacted(), indent=2, default=str))
    print(f"config {args.file}: OK")
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    logs.apply(cfg, getattr(args, "debug", False))
    from streamvae.kafka.clients import check_access

    check_access(cfg.kafka)  # refused credentials or an untrusted certificate: one line now, not after the model loads
    from streamvae.model import configure_threads

    configure_threads(1)  # score on one thread: two collapse when the other core is busy
    from streamvae.model.artifact import load, resolve
    from streamvae.service.daemon import Daemon
    from streamvae.service.http import serve

    det = load(resolve(cfg.model.path)).warmup(cfg.group.max_poll_records)
    daemon = Daemon(cfg, det, config_path=args.config)
    server = serve(cfg.http.host, cfg.http.port, daemon.metrics, daemon.health, daemon.readiness) if cfg.http.port else None
    try:
        return daemon.run()
    finally:
        if server is not None:
            server.shutdown()
