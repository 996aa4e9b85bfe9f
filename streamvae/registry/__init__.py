"""Model versions on a shared directory: a CURRENT pointer, promotion history, rollback.

A registry is a plain directory that every daemon can read (a shared volume); nothing in
this package talks to Kafka. Telling running daemons about a promotion is the job of the
control topic (``streamvae.kafka.control``), driven from ``streamvae.service``.
"""

from __future__ import annotations

from streamvae.registry.store import Registry, RegistryError, VersionInfo, is_registry

__all__ = ["Registry", "RegistryError", "VersionInfo", "is_registry"]
