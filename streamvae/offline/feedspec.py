"""What the simulated feed injects: the anomaly spec of ``streamvae simulate --anomalies``.

A spec says how many episodes of each kind (:data:`KINDS`, those of
:mod:`streamvae.lifecycle.inject`) and how long and how strong they are; where they go is
:mod:`streamvae.offline.feedepisodes`'s.

Examples
--------
>>> parse_anomalies("drift:3,severity=2").counts
(('drift', 3),)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamvae.errors import ConfigError
from streamvae.lifecycle.inject import KINDS as INJECT_KINDS

KINDS = ("spike", "level_shift", "drift", "stuck", "broken_correlation", "noise_burst", "dead")  # spec order
assert set(KINDS) == set(INJECT_KINDS)

_SPEC_KEYS = ("duration", "spike_duration", "severity", "warmup", "gap")
_GRAMMAR = (
    "expected comma-separated KIND[:COUNT] and KEY=VALUE items, e.g. 'spike:2,level_shift,drift,duration=90'; "
    f"kinds: {', '.join(KINDS)}, all (COUNT of every kind), none; keys: {', '.join(_SPEC_KEYS)}"
)


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """What to inject: how many of each kind, and how long and how strong.

    ``duration``: seconds of every episode but spikes; ``spike_duration``: seconds of a spike;
    ``severity``: multiplies every magnitude; ``warmup``: seconds at the start with no
    anomaly (None: 20 % of the feed); ``gap``: quiet seconds between two episodes of one
    entity, and after the last one.
    """

    counts: tuple[tuple[str, int], ...] = ()
    duration: float = 60.0
    spike_duration: float = 5.0
    severity: float = 1.0
    warmup: float | None = None
    gap: float = 60.0
    text: str = ""

    @property
    def total(self) -> int:
        """Episodes in all."""
        return sum(c for _, c in self.counts)


def parse_anomalies(text: str | None) -> AnomalySpec:
    """Parse an anomaly spec; a bad one is a ``ConfigError`` naming the spec and the item.

    Grammar: comma-separated items, each ``KIND``, ``KIND:COUNT``, ``all[:COUNT]`` (that many
    of every kind) or ``KEY=VALUE``; counts of a kind named twice add up. ``""`` or ``none``:
    no anomalies.

    Examples
    --------
    >>> s = parse_anomalies("spike:2,level_shift,duration=90")
    >>> s.counts, s.duration, s.total
    ((('spike', 2), ('level_shift', 1)), 90.0, 3)
    >>> parse_anomalies("all").total
    7
    >>> try:
    ...     parse_anomalies("spikes:2")
    ... except ConfigError as e:
    ...     print(str(e)[:48])
    anomaly spec 'spikes:2': unknown kind 'spikes';
    """
    spec = "" if text is None else text.strip()
    if spec.lower() in ("", "none"):
        return AnomalySpec(text=spec)

    def bad(why: str) -> ConfigError:
        return ConfigError(f"anomaly spec {spec!r}: {why}; {_GRAMMAR}")

    counts: dict[str, int] = {}
    opts: dict[str, float] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise bad("empty item")
        if "=" in item:
            key, _, val = (p.strip() for p in item.partition("="))
            if key not in _SPEC_KEYS:
                raise bad(f"unknown key {key!r}")
            try:
                v = float(val)
            except ValueError:
                raise bad(f"{key} must be a number; got {val!r}") from None
            if not math.isfinite(v) or v < 0 or (v == 0 and key in ("duration", "spike_duration", "severity")):
                raise bad(f"{key} must be a finite number {'>= 0' if key in ('warmup', 'gap') else '> 0'}; got {val!r}")
            opts[key] = v
            continue
        kind, colon, num = (p.strip() for p in item.partition(":"))
        if kind not in KINDS and kind != "all":
            raise bad(f"unknown kind {kind!r}")
        n = 1
        if colon:
            if not num.isdigit() or int(num) < 1:
                raise bad(f"count of {kind} must be an int >= 1; got {num!r}")
            n = int(num)
        for k in KINDS if kind == "all" else (kind,):
            counts[k] = counts.get(k, 0) + n
    if opts.get("severity", 1.0) > 10:
        raise bad(f"severity must be at most 10; got {opts['severity']}")
    ordered = tuple((k, counts[k]) for k in sorted(counts, key=list(counts).index))
    return AnomalySpec(counts=ordered, text=spec, **opts)
