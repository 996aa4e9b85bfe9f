"""Logging is configured here, once; every module only does ``getLogger(__name__)``."""

from __future__ import annotations

import logging
import sys


def configure(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every connection at INFO; its warnings (broker down...) still show
    logging.getLogger("kafka").setLevel(logging.DEBUG if debug else logging.WARNING)
