"""Daemon configuration: one TOML file, every key overridable by an environment variable.

``STREAMVAE_<SECTION>__<KEY>`` overrides ``[section] key`` (e.g.
``STREAMVAE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``). Everything is validated once, at
load, and a bad value is a ``ConfigError`` naming the key, the value and what is allowed.
Unknown sections and keys are errors too: a typo never silently falls back to a default.

One vocabulary says what a setting may be (``errors.Rule``: ``interval``, ``one_of``,
``text``; ``FLAG``, ``TOPIC`` and the rest in streamvae/configrules.py), one message
shape says it is not (``ConfigError.invalid``). A section checks its fields, then the
rules between them (what each ``threshold.kind`` accepts, SASL credentials, ...), however
it is built: file, environment or ``replace``.

Examples
--------
>>> load_config(env={"STREAMVAE_THRESHOLD__KIND": "quantile"})
Traceback (most recent call last):
...
streamvae.errors.ConfigError: threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.001
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from streamvae.configrules import FLAG, HOSTS, PATH, SECONDS, TOPIC, Section, kafka_name, spec
from streamvae.errors import ConfigError, Rule, check, interval, one_of, text

ENV_PREFIX = "STREAMVAE_"


# --- the sections ------------------------------------------------------------------------
SASL_MECHANISMS = one_of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaConfig(Section):
    section = "kafka"
    bootstrap_servers: str = spec("127.0.0.1:9092", HOSTS)
    client_id: str = spec("streamvae", text("a non-empty string"))
    security_protocol: str = spec("PLAINTEXT", one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    sasl_mechanism: str | None = spec(None, SASL_MECHANISMS.or_unset())
    sasl_username: str | None = spec(None, text("a string", empty=True).or_unset())
    sasl_password: str | None = spec(None, text("a string", empty=True).or_unset(), secret=True)
    ssl_cafile: str | None = spec(None, PATH)
    ssl_certfile: str | None = spec(None, PATH)
    ssl_keyfile: str | None = spec(None, PATH)
    ssl_password: str | None = spec(None, text("a string", empty=True).or_unset(), "the key file's password", secret=True)
    ssl_check_hostname: bool = spec(True, FLAG, "the broker's certificate must name the host connected to")
    # kafka-python's consumer refuses one outside (fetch_max_wait_ms = 500, connections_max_idle_ms = 540000)
    request_timeout_ms: int = spec(30_000, interval(501, 539_999, integer=True),
                                    "ms; kafka-python wants it between the fetch wait and the idle-connection limit")

    def _rules(self) -> None:
        if self.security_protocol.startswith("SASL"):
            when = f'security_protocol = "{self.security_protocol}"'
            check("kafka.sasl_mechanism", SASL_MECHANISMS, self.sasl_mechanism, when)
            check("kafka.sasl_username", text("a non-empty string"), self.sasl_username, when)
            check("kafka.sasl_password", text("a non-empty string"), self.sasl_password, when, secret=True)


@dataclass(frozen=True)
class TopicsConfig(Section):
    section = "topics"
    input: str = spec("sensors", TOPIC)
    alerts: str = spec("alerts", TOPIC)
    dead_letter: str = spec("sensors.dlq", TOPIC)
    control: str = spec("streamvae.control", TOPIC)
    samples: str = spec("streamvae.samples", TOPIC, "normal and confirmed-anomaly windows for retraining")
    scores: str | None = spec(None, TOPIC.or_unset(), "one record per scored window (score, threshold, source "
                               "offset), delivered like the alerts; unset: none")


@dataclass(frozen=True)
class GroupConfig(Section):
    section = "group"
    id: str = spec("streamvae", text("a consumer group id"))
    max_poll_records: int = spec(2000, interval(1, integer=True))
    poll_timeout_ms: int = spec(200, interval(1, integer=True))
    # The broker answers a fetch once it holds fetch_min_bytes for it or fetch_max_wait_ms
    # has passed. A poll costs the daemon ~4 ms of CPU whatever it brings (kafka-python's
    # fetch round and network thread, the pipeline's per-batch work), so at a slow feed a
    # poll should bring many records, not one. At 200 records/s (~230 bytes each on the
    # wire): 1 byte (Kafka's default) made 1.7 records a poll and cost 0.33 of a core,
    # 4 KB / 100 ms ~18 records and 0.065, 8 KB / 150 ms ~33 records and 0.040 (README
    # "Latency and CPU"). The price: a record of a slow feed waits until 8 KB gathered or
    # 150 ms passed. A feed over ~1,000 records/s fills 8 KB within ~35 ms, and a busy
    # daemon's polls bring more than that anyway. Keep the wait below poll_timeout_ms.
    fetch_min_bytes: int = spec(8192, interval(1, integer=True), "bytes")
    fetch_max_wait_ms: int = spec(150, interval(0, 500, integer=True), "ms")
    # Offsets are committed at most this often while records keep coming (and at once
    # when a poll comes back empty, on revocation and at shutdown); 0 commits every batch.
    commit_interval_ms: int = spec(1000, interval(0, integer=True), "ms")
    session_timeout_ms: int = spec(10_000, interval(1000, integer=True))
    max_poll_interval_ms: int = spec(300_000, interval(10_000, integer=True))
    auto_offset_reset: str = spec("earliest", one_of("earliest", "latest"))
    # Static membership (Kafka's group.instance.id): a daemon restarted within the session
    # timeout gets its partitions back at once instead of waiting for its dead self to
    # expire. "auto": the host name and the lowest slot number no other daemon of this
    # group on this host holds (a lock file; a killed process drops its lock, so its
    # restart takes the same slot); "none": dynamic membership; anything else: used as is.
    instance_id: str = spec("auto", Rule(lambda v: v in ("auto", "none") or kafka_name(v),
                                          "auto, none, or an id unique within the group (at most 249 ASCII "
                                          "letters, digits, '.', '_', '-')"))
    # "at_least_once": alerts and dead letters are confirmed, then the offsets committed
    # (a crash in between repeats a batch's alerts, byte for byte, with the same ids).
    # "exactly_once": one Kafka transaction per batch holds its alerts, dead letters and
    # the offset commit with its scored_to; consumers of the alerts topic must read with
    # isolation_level = read_committed. Costs throughput: see README "Delivery".
    delivery: str = spec("at_least_once", one_of("at_least_once", "exactly_once"))


@dataclass(frozen=True)
class RecordsConfig(Section):
    section = "records"
    # A bigger record is refused unread (``too_large``); its dead letter keeps its first
    # bytes, its length and its SHA-256, within the producer's request size.
    max_record_bytes: int = spec(1_000_000, interval(1, integer=True), "bytes")
    # A reading stamped further ahead of the daemon's clock is refused (``ts_in_future``):
    # it would move its entity's clock to a time no later reading reaches.
    max_future_s: float = spec(300.0, SECONDS, "allowed clock skew of a producer ahead of the daemon")
    max_lateness: float = spec(0.0, SECONDS)
    max_gap: float | None = spec(None, interval(0, math.inf, "neither", unit="seconds").or_unset(),
                                  "unset: 30 readings at the model's training interval")
    entities: list[str] | None = spec(None, Rule(lambda v: isinstance(v, list) and all(isinstance(e, str) and e for e in v),
                                                  "a list of entity ids").or_unset(), "unset: any")
    # The dead-letter guard: more than reject_share of the last reject_window records refused
    # (a schema change upstream, a broken producer) is said loudly, once per episode.
    reject_window: int = spec(1000, interval(10, integer=True), "records the refused share is judged over")
    reject_share: float = spec(0.5, interval(0, 1, "right"), "share of refused records that raises the alarm")


@dataclass(frozen=True)
class ModelConfig(Section):
    section = "model"
    path: str = spec("models/current", text("a model artifact directory or a registry with CURRENT"))
    keep_versions: int = spec(5, interval(2, integer=True), "versions kept in the registry")


# What each tracker kind takes from [threshold], and the range it accepts there;
# core/thresholds.py checks the same rules when a tracker is built in code.
RISK = interval(0, 0.1, "neither")
QUANTILE = interval(0.5, 1, "left")
LEVEL = interval(0.5, 1, "left")
DEPTH = interval(2, integer=True)
FINITE = interval(-math.inf, math.inf, "neither")
TRACKER_PARAMS: dict[str, dict[str, Rule]] = {
    "spot": {"q": RISK, "level": LEVEL},
    "dspot": {"q": RISK, "level": LEVEL, "depth": DEPTH},
    "quantile": {"q": QUANTILE},
    "fixed": {"value": FINITE},
}
MIN_PEAKS = 10  # the fewest peaks SPOT fits a tail to (core/thresholds.py): DSPOT warm-starts from depth + 11 scores


@dataclass(frozen=True)
class ThresholdConfig(Section):
    section = "threshold"
    kind: str = spec("spot", one_of(*TRACKER_PARAMS))
    q: float = spec(1e-3, interval(0, 1, "neither"), "spot, dspot: the risk, in (0, 0.1); quantile: the quantile, "
                     "in [0.5, 1)")
    level: float = spec(0.98, LEVEL)
    depth: int = spec(50, DEPTH)
    value: float | None = spec(None, FINITE.or_unset(), "kind = fixed")
    per_entity: bool = spec(True, FLAG)
    min_history: int = spec(2000, interval(20, integer=True), "an entity's own unflagged windows before it gets a "
                             "tracker of its own")
    min_history_s: float = spec(86_400.0, SECONDS, "event time those windows must span: a day covers the slow "
                                 "cycles of most plants and services")
    max_entities: int = spec(100_000, interval(1, integer=True))
    state_file: str | None = spec(None, PATH, "unset: thresholds re-learn after a restart")
    save_every: float = spec(60.0, interval(0, closed="neither", unit="seconds"))

    def _rules(self) -> None:
        when = f'kind = "{self.kind}"'
        for key, rule in TRACKER_PARAMS[self.kind].items():
            check(f"threshold.{key}", rule, getattr(self, key), when)
        if self.kind == "dspot" and self.per_entity:  # an entity's own tracker starts from min_history scores
            check("threshold.depth", interval(2, self.min_history - MIN_PEAKS - 1, integer=True), self.depth,
                  f'kind = "dspot", per_entity = true and min_history = {self.min_history}')

    def tracker_params(self) -> dict[str, Any]:
        """The settings the tracker of ``kind`` takes (``core.trackers.make_threshold``)."""
        return {key: getattr(self, key) for key in TRACKER_PARAMS[self.kind]}


WINDOWS = interval(0, integer=True)


@dataclass(frozen=True)
class EpisodesConfig(Section):
    """Episode timing, in windows of one entity (a reading each at stride 1), never in
    seconds: the same setting works at one reading a second and at one an hour."""

    section = "episodes"
    open_after: int = spec(8, interval(1, integer=True), "consecutive flagged windows")
    close_after: int = spec(0, WINDOWS, "consecutive windows without a flag; 0: one window length")
    update_every: int = spec(0, WINDOWS, "windows between two updates; 0: five window lengths")
    accept: bool = spec(True, FLAG, "a change that persists may become the entity's new normal; false: it stays an "
                         "anomaly until a retrain")
    accept_after: int = spec(0, WINDOWS, "windows an episode lasts before its change may become the entity's new "
                              "normal; 0: three window lengths")
    accept_min_s: float = spec(3600.0, SECONDS, "event time an episode must also last before its change may become "
                                "the new normal: a fault of minutes never does")


@dataclass(frozen=True)
class RulesConfig(Section):
    section = "rules"
    dead_sensor: bool = spec(True, FLAG)
    stuck_sensor: bool = spec(True, FLAG)


@dataclass(frozen=True)
class RetrainConfig(Section):
    """Retraining on the windows the daemon judged normal (issue 5)."""

    section = "retrain"
    enabled: bool = spec(False, FLAG, "the daemon runs the retrain worker")
    buffer: str = spec("local", one_of("local", "kafka"), "local: this daemon's own buffer; kafka: shared through "
                        "topics.samples")
    max_windows: int = spec(20_000, interval(100, integer=True), "normal windows kept, all entities")
    max_anomalies: int = spec(2_000, interval(1, integer=True), "windows from confirmed alert episodes kept for the gate")
    sample_every: int = spec(10, interval(1, integer=True), "1 normal window in N per entity is sampled")
    margin: float = spec(300.0, SECONDS, "no normal sample this close before or after an episode")
    fleet_share: float = spec(0.5, interval(0, 1), "share of the fleet alarming at once that means a new operating "
                               "point; 0: off")
    shift_span: float = spec(0.0, SECONDS, "after a fleet-wide shift a retrain learns the newest this many seconds of "
                              "the move; cover the plant's slowest regular cycle; 0: the span in which the buffer "
                              "collects min_windows windows")
    state_dir: str | None = spec(None, PATH, "a directory for the local buffer on disk; unset: memory only")
    schedule: float = spec(0.0, SECONDS, "between scheduled retrains; 0: none")
    after_windows: int = spec(0, WINDOWS, "retrain after this many new buffered windows; 0: never")
    drift: str = spec("adwin", one_of("adwin", "page_hinkley", "none"))
    drift_delta: float = spec(0.002, interval(0, 1, "neither"))
    min_interval: float = spec(600.0, SECONDS, "between two retrains")
    min_windows: int = spec(1_000, interval(50, integer=True), "buffered windows needed to retrain")
    epochs: int = spec(20, interval(1, integer=True))
    tolerance: float = spec(0.01, interval(0, 0.5, "left"))
    samples_retention_ms: int = spec(86_400_000, interval(1, integer=True), "retention of topics.samples")

    def _rules(self) -> None:
        # the buffer never holds more than max_windows: a larger min_windows never retrains
        check("retrain.min_windows", interval(50, self.max_windows, integer=True), self.min_windows,
              f"retrain.max_windows = {self.max_windows}")


@dataclass(frozen=True)
class HttpConfig(Section):
    section = "http"
    host: str = spec("127.0.0.1", text("an address to bind"))
    port: int = spec(0, interval(0, 65535, integer=True), "0: none")
    # /readyz: not ready once the last poll that reached the broker is older than this
    ready_poll_age: float = spec(30.0, interval(1, 3600, unit="seconds"))


@dataclass(frozen=True)
class LogConfig(Section):
    section = "log"
    format: str = spec("text", one_of("text", "json"), "json: one object per line, for log collectors")
    level: str = spec("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def redacted(self) -> dict[str, Any]:
        """As a dict, with secrets replaced by '***' (for logs and `config check`)."""
        out: dict[str, Any] = {}
        for sec in dataclasses.fields(self):
            obj = getattr(self, sec.name)
            out[sec.name] = {
                f.name: ("***" if f.metadata.get("secret") and getattr(obj, f.name) else getattr(obj, f.name))
                for f in dataclasses.fields(obj)
            }
        return out


def _from_env(raw: str, default: Any, typ: Any) -> Any:
    """Parse an environment string by the type of the setting (unparsable: the string, which its rule refuses)."""
    t, low = str(typ), raw.strip().lower()
    if low in ("", "none", "null") and ("None" in t or default is None):
        return None
    if "bool" in t:
        return {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                "off": False}.get(low, raw)
    if "list" in t:
        return [p.strip() for p in raw.split(",") if p.strip()]
    try:
        return float(raw) if "float" in t else int(raw) if "int" in t else raw
    except ValueError:
        return raw


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML; None: defaults only), apply environment overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config {p} is not valid TOML: {e}") from None
    env = os.environ if env is None else env
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; allowed: {sorted(sections)}")
    built: dict[str, Any] = {}
    for name, sec in sections.items():
        cls: Any = sec.default_factory
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of settings")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - set(fields))
        if bad:
            raise ConfigError(f"unknown key(s) {bad} in [{name}]; allowed: {sorted(fields)}")
        kw = dict(values)
        for key, f in fields.items():
            var = f"{ENV_PREFIX}{name.upper()}__{key.upper()}"
            if var in env:
                kw[key] = _from_env(env[var], f.default, f.type)
        for key, v in kw.items():  # TOML's 1 where a number of seconds goes: 1.0
            if isinstance(v, int) and not isinstance(v, bool) and "float" in str(fields[key].type):
                kw[key] = float(v)
        built[name] = cls(**kw)  # checks every field, then the rules between them
    return Config(**built)
