"""``streamvae models list | show | promote | rollback``: the registry from the command line.

With ``--registry DIR`` only the directory changes: running daemons notice the new
CURRENT when they next re-read it (``HotSwap`` does every 30 s) or restart. With
``--config FILE`` the registry is ``model.path`` and a promotion or rollback is also
published on ``topics.control``, so every daemon of the group swaps within seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from streamvae.config import Config, ModelConfig, load_config
from streamvae.kafka.control import ControlError, control_event, publish_control
from streamvae.registry import Registry, RegistryError, is_registry
from streamvae.service import logs

log = logging.getLogger(__name__)


def _open(args: argparse.Namespace) -> tuple[Registry, Config | None]:
    cfg = load_config(args.config) if args.config else None
    if cfg is not None:
        logs.apply(cfg, getattr(args, "debug", False))
    root = Path(cfg.model.path if cfg is not None else args.registry)
    where = f"model.path in {args.config}" if cfg is not None else "--registry"
    if not root.is_dir():
        raise RegistryError(f"registry {root} ({where}) is not a directory; create it with a first version")
    if (root / "checksum.sha256").is_file() and not is_registry(root):
        raise RegistryError(f"{root} ({where}) is a single model artifact, not a registry of versions")
    return Registry(root), cfg


def _notify(cfg: Config | None, entry: dict[str, Any], reg: Registry) -> None:
    """Publish the control event for a promotion or rollback, or say why it was not."""
    if cfg is None:
        print("no --config: no control event sent; running daemons re-read CURRENT within 30 s, or at restart")
        return
    ev = control_event(str(entry["action"]), str(entry["version"]),
                       None if entry.get("previous") is None else str(entry["previous"]),
                       str(entry.get("reason", "")), at=float(entry["at"]))
    try:
        publish_control(cfg.kafka, cfg.topics.control, ev)
    except ControlError as e:
        raise ControlError(f"{reg.root}: CURRENT is now {entry['version']}, but the daemons were not told ({e}); they "
                           "re-read CURRENT within 30 s, or run the command again") from e
    print(f"control event {ev['type']} {ev['version']} published on {cfg.topics.control}")


def models_list(args: argparse.Namespace) -> int:
    reg, _ = _open(args)
    versions = reg.versions()
    if not versions:
        print(f"no versions in registry {reg.root}")
        return 0
    cur, back = reg.current(), reg.rollback_target()
    rows = [("", "VERSION", "CREATED", "FEATURES", "WINDOW", "HELD-OUT SCORES")]
    for v in versions:
        mark = "*" if v.version == cur else ("<" if v.version == back else "")
        feats = f"{len(v.feature_names)}: {','.join(v.feature_names)}"
        feats = feats if len(feats) <= 40 else feats[:37] + "..."
        rows.append((mark, v.version, v.created or "?", feats, str(v.window or "?"), v.error or v.summary()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"* CURRENT   < rollback target   ({len(versions)} versions in {reg.root})")
    return 0


def models_show(args: argparse.Namespace) -> int:
    reg, _ = _open(args)
    manifest = reg.manifest(args.version)
    manifest["current"] = args.version == reg.current()
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0


def models_promote(args: argparse.Namespace) -> int:
    reg, cfg = _open(args)
    entry = reg.promote(args.version, reason=args.reason)
    if entry.get("unchanged"):
        print(f"{args.version} is already CURRENT")
    else:
        print(f"promoted {entry['version']} (was {entry['previous']})")
    keep = args.keep if args.keep is not None else (cfg.model.keep_versions if cfg is not None else ModelConfig().keep_versions)
    for v in reg.prune(keep):
        print(f"pruned {v}")
    _notify(cfg, entry, reg)
    return 0


def models_rollback(args: argparse.Namespace) -> int:
    reg, cfg = _open(args)
    entry = reg.rollback(reason=args.reason)
    print(f"rolled back to {entry['version']} (was {entry['previous']})")
    _notify(cfg, entry, reg)
    return 0


COMMANDS = {"list": models_list, "show": models_show, "promote": models_promote, "rollback": models_rollback}


def models(args: argparse.Namespace) -> int:
    """Dispatch ``streamvae models <command>``."""
    return COMMANDS[args.models_command](args)
