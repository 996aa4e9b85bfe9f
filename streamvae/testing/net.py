"""A free TCP port on the loopback interface."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no socket holds right now.

    Another process may still take it before the caller binds it: good enough for a test
    daemon's HTTP port, and the broker retries its own ports (deploy/kafka/broker.py).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
