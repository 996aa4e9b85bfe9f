"""Logging is configured here, once; every module only does ``getLogger(__name__)``.

Two formats, by ``[log] format``:

- ``text`` (the default), for a terminal: ``2024-05-01 12:00:00,123 INFO streamvae.x: message``.
- ``json``, for a log collector: one object per line with ``time`` (ISO 8601, UTC, ms),
  ``level``, ``logger``, ``event`` (the message), the structured fields the call site
  passes as ``extra=`` (``entity``, ``topic``, ``partition``, ``offset``, ...) and ``exc``,
  the traceback, when there is one.

Secrets never appear: both formats replace every registered secret (the config's
``kafka.sasl_password`` and ``kafka.ssl_password``, from the environment at
:func:`configure`, from the config at :func:`apply`) with ``***`` wherever it occurs:
message, arguments, extras, traceback.

The command line calls :func:`configure` before it runs a command (``--debug``, and
``STREAMVAE_LOG__FORMAT`` / ``STREAMVAE_LOG__LEVEL`` so that startup lines already have the
configured form); a command that loads a config calls :func:`apply` with it.

Examples
--------
>>> import json
>>> f = JsonFormatter(Redactor({"hunter2"}))
>>> r = logging.LogRecord("streamvae.x", logging.WARNING, "x.py", 1, "login %s failed", ("hunter2",), None)
>>> r.__dict__.update(entity="pump-17", partition=3, offset=42)
>>> d = json.loads(f.format(r))
>>> d["level"], d["logger"], d["event"], d["entity"], d["partition"], d["offset"]
('WARNING', 'streamvae.x', 'login *** failed', 'pump-17', 3, 42)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
import sys
from datetime import datetime, timezone
from typing import Any, Iterable

from streamvae.config import ENV_PREFIX, Config, LogConfig
from streamvae.errors import ConfigError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # testing/proof/soak.py reads it
MASK = "***"
# what every LogRecord has; any other attribute came from ``extra=`` and goes in the JSON object
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class Redactor:
    """Replaces each secret it holds with ``***`` in a string.

    >>> Redactor({"s3cret"})("password=s3cret")
    'password=***'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        self.secrets.update(s for s in secrets if s)  # never "", which occurs everywhere

    def __call__(self, text: str) -> str:
        for s in sorted(self.secrets, key=len, reverse=True):  # a secret inside a longer one: the longer first
            text = text.replace(s, MASK)
        return text


class TextFormatter(logging.Formatter):
    """The terminal's format, unchanged, with the secrets masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; never fails on what a call site passes."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {"time": time.replace("+00:00", "Z"), "level": record.levelname, "logger": record.name}
        try:
            out["event"] = record.getMessage()
        except Exception as e:  # a call site's %-format and arguments disagree: keep both, and say so
            out.update(event=str(record.msg), args=record.args, format_error=repr(e))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key if key not in out else f"extra.{key}"] = value
        if record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # stdlib json, as the rest of service/ (tests/unit/test_layers.py: no orjson here);
        # ASCII only, so a collector reads the line whatever stderr's encoding
        return json.dumps(self._plain(out), default=str, allow_nan=False)

    def _plain(self, v: Any) -> Any:
        """``v`` as JSON values, every string masked (keys too): an object JSON does not
        know becomes ``str(v)``, masked before it is written; NaN and infinities become null."""
        if v is None or isinstance(v, (bool, int)):
            return v
        if isinstance(v, numbers.Integral):  # numpy integers
            return int(v)
        if isinstance(v, numbers.Real):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, dict):
            return {self.redact(str(k)): self._plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [self._plain(x) for x in v]
        try:
            return self.redact(v if isinstance(v, str) else str(v))
        except Exception:  # a __str__ that raises
            return f"<unprintable {type(v).__name__}>"


_redact = Redactor()
_handler: logging.Handler | None = None  # the one this module installed, replaced on each call


def configure(debug: bool = False, fmt: str | None = None, level: str | None = None) -> None:
    """Install the handler on the root logger: ``fmt`` ``"text"`` or ``"json"``, ``level`` a
    level name; None takes ``STREAMVAE_LOG__FORMAT`` / ``__LEVEL`` (ignored when invalid:
    loading the config reports them), else text and INFO. ``debug``: DEBUG, kafka-python too.

    Like ``logging.basicConfig``, it leaves alone a root logger that someone else gave
    handlers (pytest, a program that embeds streamvae); a second call replaces its own.
    """
    global _handler
    env = _from_env()
    add_secrets(None)  # the ones in STREAMVAE_KAFKA__SASL_PASSWORD...: commands without a config read those too
    kafka = logging.getLogger("kafka")
    # kafka-python logs every connection at INFO; its warnings (broker down...) still show
    kafka.setLevel(logging.DEBUG if debug else logging.WARNING)
    root = logging.getLogger()
    if _handler is None and root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = fmt or env.format
    handler.setFormatter(JsonFormatter(_redact) if fmt == "json" else TextFormatter(_redact))
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(logging.DEBUG if debug else (level or env.level))


def apply(cfg: Config, debug: bool = False) -> None:
    """Log as ``cfg.log`` says, and mask the secrets ``cfg`` holds from now on."""
    add_secrets(cfg)
    configure(debug, cfg.log.format, cfg.log.level)


def add_secrets(cfg: Config | None) -> None:
    """Register every setting the config marks secret (``kafka.sasl_password``, ...);
    None: the values of their environment variables."""
    for sec in dataclasses.fields(Config):
        obj = getattr(cfg or Config(), sec.name)
        for f in dataclasses.fields(obj):
            if f.metadata.get("secret"):
                var = f"{ENV_PREFIX}{sec.name.upper()}__{f.name.upper()}"
                _redact.add([os.environ.get(var) if cfg is None else getattr(obj, f.name)])


def _from_env() -> LogConfig:
    """``[log]`` from the environment alone, before the config file is read; a bad value
    is skipped here (the config's load names it)."""
    kw: dict[str, str] = {}
    for f in dataclasses.fields(LogConfig):
        raw = os.environ.get(f"{ENV_PREFIX}LOG__{f.name.upper()}")
        if raw is not None:
            try:
                LogConfig(**{f.name: raw})
                kw[f.name] = raw
            except ConfigError:
                pass
    return LogConfig(**kw)


def exit_line(message: str, level: int = logging.ERROR) -> None:
    """The command's last line on stderr (``streamvae: error: ...``): printed as it is, or
    one object like every other line when logging is JSON, whatever the level; secrets
    masked either way."""
    if _handler is not None and isinstance(_handler.formatter, JsonFormatter):
        _handler.handle(logging.getLogger("streamvae").makeRecord("streamvae", level, __file__, 0, message, (), None))
    else:
        print(_redact(message), file=sys.stderr)
