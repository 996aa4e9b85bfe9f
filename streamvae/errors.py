"""One error tree for streamvae: every message names the thing and the fix.

``cli.main`` prints a :class:`StreamvaeError` on one line and exits 2. A bad parameter
or setting is refused in one vocabulary and one message shape (after scikit-learn's
``_param_validation``): a :class:`Rule` says what is allowed (``interval``, ``one_of``,
``text``) and :func:`check` raises ``ConfigError("KEY must be ALLOWED; got VALUE")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


class StreamvaeError(Exception):
    """Root of every error streamvae raises on purpose."""


class ConfigError(StreamvaeError, ValueError):
    """A bad option, parameter or configuration value."""

    @classmethod
    def invalid(cls, key: str, allowed: str, value: object, when: str = "", secret: bool = False) -> "ConfigError":
        """The one message shape for a bad value: ``KEY must be ALLOWED[ for WHEN]; got VALUE``.

        ``when``: the setting that narrows what is allowed (``kind = "spot"``);
        ``secret``: the value is shown as ``***``.

        >>> print(ConfigError.invalid("threshold.q", "a number in (0, 0.1)", 0.5, when='kind = "spot"'))
        threshold.q must be a number in (0, 0.1) for kind = "spot"; got 0.5
        """
        shown = "***" if secret and value else repr(value)
        return cls(f"{key} must be {allowed}{f' for {when}' if when else ''}; got {shown}")


class KafkaAccessError(StreamvaeError):
    """The Kafka broker refused this client: its SASL credentials, or its TLS settings
    (an untrusted certificate, a mechanism the broker does not offer)."""


class DataError(StreamvaeError, ValueError):
    """Input data that cannot be used (unreadable file, missing column, too few rows)."""


class RecordError(StreamvaeError, ValueError):
    """One input record is malformed; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ArtifactError(StreamvaeError):
    """A model artifact is missing, corrupt, tampered with or of an unknown format."""


class NotFittedError(StreamvaeError, RuntimeError):
    """An estimator was used before ``fit`` (or ``calibrate``) was called."""


class NotCalibratedError(NotFittedError):
    """A threshold was used before it was calibrated."""


# --- one vocabulary for what a parameter may be ------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    """What a parameter may be: a test, and the words for it in an error message."""

    test: Callable[[Any], bool]
    text: str

    def __call__(self, v: Any) -> bool:
        return self.test(v)

    def or_unset(self) -> Rule:
        return Rule(lambda v: v is None or self.test(v), f"{self.text}, or unset")


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else repr(float(x))


def interval(low: float, high: float | None = None, closed: str = "both", *, integer: bool = False, unit: str = "") -> Rule:
    """A number (``integer``: an int) from ``low`` to ``high`` (None: no end); ``closed``: the
    ends that belong to it, both, left, right or neither. Never a bool or NaN; an open end
    at infinity keeps infinity out.

    >>> interval(0, 0.1, "neither").text, interval(1, integer=True).text, interval(0, unit="seconds").text
    ('a number in (0, 0.1)', 'an int >= 1', 'seconds >= 0')
    """
    lo_in, hi_in = closed in ("both", "left"), closed in ("both", "right")
    kinds: type | tuple[type, ...] = int if integer else (int, float)

    def test(v: Any) -> bool:
        number = isinstance(v, kinds) and not isinstance(v, bool)
        if not number or v != v:
            return False
        return (v >= low if lo_in else v > low) and (high is None or (v <= high if hi_in else v < high))

    noun = "an int" if integer else unit or "a number"
    if high is None:
        return Rule(test, f"{noun} {'>=' if lo_in else '>'} {_num(low)}")
    if (low, high, closed) == (-math.inf, math.inf, "neither"):
        return Rule(test, "a finite number")
    return Rule(test, f"{noun} in {'[' if lo_in else '('}{_num(low)}, {_num(high)}{']' if hi_in else ')'}")


def one_of(*values: str) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v in values, f"one of {', '.join(values)}")


def text(words: str, empty: bool = False) -> Rule:
    """A string (``empty``: may be ""), described as ``words``."""
    return Rule(lambda v: isinstance(v, str) and (empty or v != ""), words)


def check(key: str, rule: Rule, value: Any, when: str = "", secret: bool = False, allowed: str = "") -> None:
    """Raise the one ConfigError shape unless ``rule`` allows ``value``."""
    if not rule(value):
        raise ConfigError.invalid(key, allowed or rule.text, value, when, secret)
