"""What a configuration value may be, and how a section of the configuration checks its
fields (streamvae/config.py holds the sections themselves).

A field is declared with :func:`spec`: its default, the :class:`~streamvae.errors.Rule`
its value must meet and, for the error message, what is allowed. A :class:`Section`
checks each field when it is built (from a file, the environment or ``replace``), then the
rules between its fields (``_rules``).

Examples
--------
>>> TOPIC("sensors.dlq"), TOPIC("a b"), HOSTS("[::1]:9092,broker:9093"), HOSTS("h:0")
(True, False, True, False)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import field
from typing import Any, ClassVar

from streamvae.errors import Rule, check, interval, text


def kafka_name(v: Any) -> bool:
    """A legal Kafka topic name (and group.instance.id): at most 249 of [A-Za-z0-9._-], not . or .."""
    return isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v) is not None and v not in (".", "..")


def _hosts(v: Any) -> bool:
    """What kafka-python reads as bootstrap servers: host, host:port, [IPv6]:port or a bare
    IPv6 address, each with an optional PROTOCOL:// prefix; a port is in [1, 65535]."""
    for part in v.strip().split(",") if isinstance(v, str) and v.strip() else [""]:
        p = re.sub(r"^.*://", "", part.strip())
        if p.startswith("["):  # [IPv6] or [IPv6]:port
            host, closed, port = p[1:].partition("]")
            if not closed or (port and not port.startswith(":")):
                return False
            port = port[1:] if port else "9092"
        elif ":" not in p or _ipv6(p):
            host, port = p, "9092"
        else:
            host, port = p.rsplit(":", 1)
        if not host or not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
            return False
    return True


def _ipv6(p: str) -> bool:
    try:
        ipaddress.IPv6Address(p)
        return True
    except ValueError:
        return False


FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
HOSTS = Rule(_hosts, "host:port[,host:port...] with a port in [1, 65535]")
TOPIC = Rule(kafka_name, "a topic name (at most 249 ASCII letters, digits, '.', '_', '-')")
PATH = text("a path", empty=True).or_unset()
SECONDS = interval(0, unit="seconds")


def spec(default: Any, rule: Rule, note: str = "", secret: bool = False) -> Any:
    allowed = f"{rule.text} ({note})" if note else rule.text
    return field(default=default, repr=not secret, metadata={"check": rule, "allowed": allowed, "secret": secret})


class Section:
    """Checks each field by its rule when built, then the rules between fields (``_rules``)."""

    section: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check(f"{self.section}.{f.name}", f.metadata["check"], getattr(self, f.name),
                  secret=f.metadata["secret"], allowed=f.metadata["allowed"])
        self._rules()

    def _rules(self) -> None:
        pass
