"""The proof under faults and hostile input (``scripts/proof``): scenarios on the real broker.

Each scenario is a function ``run(ctx: Context) -> Outcome``: it feeds a topic, runs the
daemon (``streamvae run`` as a child process) through its faults, reads back what came out
(scores, alerts, dead letters; read_committed) and accounts for every record, window and
injected anomaly. ``scripts/proof`` runs them and sums the outcomes; the integration tests
run the quick versions and assert the zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Context:
    """What every scenario gets: the broker's address (``broker``: the LocalBroker object
    when the scenario may stop and restart it, else None), a trained model, a work folder of
    its own, ``quick`` (the version the test command runs) and a seed."""

    bootstrap: str
    model: Path
    work: Path
    quick: bool = False
    seed: int = 0
    broker: Any = None


@dataclass
class Outcome:
    """A scenario's accounting. ``lost_records``: good records neither in a scored window
    nor dead-lettered, plus bad records not on the dead-letter topic; ``lost_windows``:
    windows the feed makes that were never scored; ``missed_anomalies``: injected
    anomalies without an alert; ``crashes``: daemon exits the scenario did not cause;
    ``duplicate_alerts``: alert ids seen more than once by a read_committed consumer
    (``exactly_once``: whether the daemon ran in that mode); ``recovery_s``: restart to
    first new score, per restart; ``notes``: anything else worth a row in the table."""

    name: str
    records: int = 0
    bad_records: int = 0
    windows: int = 0
    anomalies: int = 0
    lost_records: int = 0
    lost_windows: int = 0
    missed_anomalies: int = 0
    crashes: int = 0
    duplicate_alerts: int = 0
    exactly_once: bool = False
    recovery_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def clean(self) -> bool:
        """Nothing lost, missed or crashed, and no duplicate where exactly-once was promised."""
        return not (self.lost_records or self.lost_windows or self.missed_anomalies or self.crashes
                    or (self.exactly_once and self.duplicate_alerts))
