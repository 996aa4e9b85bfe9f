"""The daemon's static group membership id (Kafka's ``group.instance.id``).

With a static id, a daemon restarted within the session timeout (after a SIGKILL, an
OOM kill, a node reboot) takes over its own membership at once: the group coordinator
hands it the partitions its dead self held, without waiting for that member to expire
and without a rebalance of the others. Two live consumers must never share an id (the
coordinator fences the older one), so ``"auto"`` picks one per process on this host:
the host name and the lowest slot number whose lock file no other daemon of the group
holds. The lock is an ``flock`` on an open file: the kernel drops it when its process
dies however it dies, so a restart takes the same slot, and so the same id, again.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import IO

from streamvae.errors import ConfigError

MAX_SLOTS = 1024


class InstanceId:
    """``value``: the id to join the group with (None: dynamic membership); hold the
    object as long as the consumer runs (it holds the slot's lock)."""

    def __init__(self, value: str | None, lock: IO[bytes] | None = None) -> None:
        self.value = value
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def lock_dir() -> Path:
    """Where slot locks live: ``$STREAMVAE_LOCK_DIR``, else a per-user folder in the temp dir."""
    return Path(os.environ.get("STREAMVAE_LOCK_DIR") or Path(tempfile.gettempdir()) / f"streamvae-{os.getuid()}")


def claim(configured: str, group_id: str, host: str | None = None, where: Path | None = None) -> InstanceId:
    """The id for ``group.instance_id = configured`` ("auto", "none" or an explicit id)."""
    if configured == "none":
        return InstanceId(None)
    if configured != "auto":
        return InstanceId(configured)
    host = host or socket.gethostname() or "host"
    folder = where or lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the lock folder {folder} for group.instance_id = auto ({e}); "
                          "set STREAMVAE_LOCK_DIR or group.instance_id") from None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)[:100]
    for slot in range(MAX_SLOTS):
        fh = open(folder / f"{safe}.{slot}.lock", "ab")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return InstanceId(f"{host}-{slot}", fh)
    raise ConfigError(f"{MAX_SLOTS} daemons of group {group_id} already run on this host; set group.instance_id")
