"""Every threshold kind by its name: build one from configuration, or from saved state."""

from __future__ import annotations

from typing import Any

from streamvae.config import TRACKER_PARAMS
from streamvae.core.spot import DSPOT, SPOT
from streamvae.core.thresholds import FixedThreshold, QuantileThreshold, Threshold
from streamvae.errors import ConfigError, check, one_of

THRESHOLD_KINDS = tuple(TRACKER_PARAMS)  # spot, dspot, quantile, fixed: what [threshold] kind accepts
_CLASSES: dict[str, Any] = {"quantile": QuantileThreshold, "spot": SPOT, "dspot": DSPOT, "fixed": FixedThreshold}


def make_threshold(kind: str, **params: Any) -> Threshold:
    """Build a tracker from configuration; an unknown kind or parameter is a ConfigError."""
    check("threshold.kind", one_of(*THRESHOLD_KINDS), kind)
    try:
        return _CLASSES[kind](**params)  # type: ignore[no-any-return]
    except TypeError as e:
        raise ConfigError(f'unknown threshold parameter for kind = "{kind}": {e}') from None


def threshold_from_state(d: dict[str, Any]) -> Threshold:
    """Rebuild a tracker saved with ``to_state()``."""
    cls = _CLASSES.get(d.get("kind", ""))
    if cls is None:
        raise ConfigError(f"unknown threshold state kind {d.get('kind')!r}")
    return cls.from_state(d)  # type: ignore[no-any-return]
