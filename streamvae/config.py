"""Daemon configuration: one TOML file, every key overridable by an environment variable.

``STREAMVAE_<SECTION>__<KEY>`` overrides ``[section] key`` (e.g.
``STREAMVAE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``). Everything is validated once, at
load, and a bad value is a ``ConfigError`` naming the key, the value and what is allowed.
Unknown sections and keys are errors too: a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from streamvae.errors import ConfigError

ENV_PREFIX = "STREAMVAE_"


def _spec(default: Any, check: Callable[[Any], bool] | None = None, allowed: str = "", secret: bool = False) -> Any:
    return field(default=default, metadata={"check": check, "allowed": allowed, "secret": secret})


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _nonneg(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = _spec("127.0.0.1:9092", _str, "host:port[,host:port...]")
    client_id: str = _spec("streamvae", _str, "a non-empty string")
    security_protocol: str = _spec("PLAINTEXT", lambda v: v in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                                   "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
    sasl_mechanism: str | None = _spec(None, lambda v: v in (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                                       "unset or one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = _spec(None, _opt_str, "a string")
    sasl_password: str | None = _spec(None, _opt_str, "a string", secret=True)
    ssl_cafile: str | None = _spec(None, _opt_str, "a file path")
    ssl_certfile: str | None = _spec(None, _opt_str, "a file path")
    ssl_keyfile: str | None = _spec(None, _opt_str, "a file path")
    request_timeout_ms: int = _spec(30_000, _pos_int, "an int >= 1")


@dataclass(frozen=True)
class TopicsConfig:
    input: str = _spec("sensors", _str, "a topic name")
    alerts: str = _spec("alerts", _str, "a topic name")
    dead_letter: str = _spec("sensors.dlq", _str, "a topic name")
    control: str = _spec("streamvae.control", _str, "a topic name")
    samples: str = _spec("streamvae.samples", _str, "a topic name (normal and confirmed-anomaly windows for retraining)")


@dataclass(frozen=True)
class GroupConfig:
    id: str = _spec("streamvae", _str, "a consumer group id")
    max_poll_records: int = _spec(2000, _pos_int, "an int >= 1")
    poll_timeout_ms: int = _spec(200, _pos_int, "an int >= 1")
    # Offsets are committed at most this often while records keep coming (and at once
    # when a poll comes back empty, on revocation and at shutdown); 0 commits every batch.
    commit_interval_ms: int = _spec(1000, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0 (ms)")
    session_timeout_ms: int = _spec(10_000, lambda v: _pos_int(v) and v >= 1000, "an int >= 1000")
    max_poll_interval_ms: int = _spec(300_000, lambda v: _pos_int(v) and v >= 10_000, "an int >= 10000")
    auto_offset_reset: str = _spec("earliest", lambda v: v in ("earliest", "latest"), "earliest or latest")
    # Static membership (Kafka's group.instance.id): a daemon restarted within the session
    # timeout gets its partitions back at once instead of waiting for its dead self to
    # expire. "auto": the host name and the lowest slot number no other daemon of this
    # group on this host holds (a lock file; a killed process drops its lock, so its
    # restart takes the same slot); "none": dynamic membership; anything else: used as is.
    instance_id: str = _spec("auto", _str, "auto, none, or an id unique within the group")


@dataclass(frozen=True)
class RecordsConfig:
    # A bigger record is refused unread (``too_large``); its dead letter keeps its first
    # bytes, its length and its SHA-256, within the producer's request size.
    max_record_bytes: int = _spec(1_000_000, _pos_int, "an int >= 1 (bytes)")
    # A reading stamped further ahead of the daemon's clock is refused (``ts_in_future``):
    # it would move its entity's clock to a time no later reading reaches.
    max_future_s: float = _spec(300.0, _nonneg, "seconds >= 0 (allowed clock skew of a producer ahead of the daemon)")
    max_lateness: float = _spec(0.0, _nonneg, "seconds >= 0")
    max_gap: float | None = _spec(None, lambda v: v is None or (_nonneg(v) and v > 0),
                                  "seconds > 0, or unset (30 readings at the model's training interval)")
    entities: list[str] | None = _spec(None, lambda v: v is None or (isinstance(v, list) and all(_str(e) for e in v)),
                                       "a list of entity ids, or unset for any")


@dataclass(frozen=True)
class ModelConfig:
    path: str = _spec("models/current", _str, "a model artifact directory or a registry with CURRENT")
    keep_versions: int = _spec(5, lambda v: _pos_int(v) and v >= 2, "an int >= 2 (versions kept in the registry)")


@dataclass(frozen=True)
class ThresholdConfig:
    kind: str = _spec("spot", lambda v: v in ("spot", "dspot", "quantile", "fixed"), "one of spot, dspot, quantile, fixed")
    q: float = _spec(1e-3, lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1): the risk for spot/dspot, the quantile for quantile")
    level: float = _spec(0.98, lambda v: isinstance(v, (int, float)) and 0.5 <= v < 1, "a number in [0.5, 1)")
    depth: int = _spec(50, lambda v: _pos_int(v) and v >= 2, "an int >= 2")
    value: float | None = _spec(None, lambda v: v is None or isinstance(v, (int, float)), "a number (kind = fixed)")
    per_entity: bool = _spec(True, lambda v: isinstance(v, bool), "true or false")
    min_history: int = _spec(2000, lambda v: _pos_int(v) and v >= 20, "an int >= 20 (an entity's own unflagged windows "
                             "before it gets a tracker of its own)")
    min_history_s: float = _spec(86_400.0, _nonneg, "seconds >= 0 (event time those windows must span: a day covers "
                                 "the slow cycles of most plants and services)")
    max_entities: int = _spec(100_000, _pos_int, "an int >= 1")
    state_file: str | None = _spec(None, _opt_str, "a file path, or unset (thresholds re-learn after a restart)")
    save_every: float = _spec(60.0, lambda v: _nonneg(v) and v > 0, "seconds > 0")

    def tracker_params(self) -> dict[str, Any]:
        if self.kind == "spot":
            return {"q": self.q, "level": self.level}
        if self.kind == "dspot":
            return {"q": self.q, "level": self.level, "depth": self.depth}
        if self.kind == "quantile":
            return {"q": self.q}
        return {"value": self.value}


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass(frozen=True)
class EpisodesConfig:
    """Episode timing, in windows of one entity (a reading each at stride 1), never in
    seconds: the same setting works at one reading a second and at one an hour."""

    open_after: int = _spec(8, _pos_int, "an int >= 1 (consecutive flagged windows)")
    close_after: int = _spec(0, _count, "an int >= 0 (consecutive windows without a flag; 0: one window length)")
    update_every: int = _spec(0, _count, "an int >= 0 (windows between two updates; 0: five window lengths)")
    accept: bool = _spec(True, lambda v: isinstance(v, bool), "true or false (a change that persists may become "
                         "the entity's new normal; false: it stays an anomaly until a retrain)")
    accept_after: int = _spec(0, _count, "an int >= 0 (windows an episode lasts before its change may become the "
                              "entity's new normal; 0: three window lengths)")
    accept_min_s: float = _spec(3600.0, _nonneg, "seconds >= 0 (event time an episode must also last before its "
                                "change may become the new normal: a fault of minutes never does)")


@dataclass(frozen=True)
class RulesConfig:
    dead_sensor: bool = _spec(True, lambda v: isinstance(v, bool), "true or false")
    stuck_sensor: bool = _spec(True, lambda v: isinstance(v, bool), "true or false")


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining on the windows the daemon judged normal (issue 5)."""

    enabled: bool = _spec(False, lambda v: isinstance(v, bool), "true or false (the daemon runs the retrain worker)")
    buffer: str = _spec("local", lambda v: v in ("local", "kafka"), "local (this daemon's own buffer) or kafka (shared through topics.samples)")
    max_windows: int = _spec(20_000, lambda v: _pos_int(v) and v >= 100, "an int >= 100 (normal windows kept, all entities)")
    max_anomalies: int = _spec(2_000, _pos_int, "an int >= 1 (windows from confirmed alert episodes kept for the gate)")
    sample_every: int = _spec(10, _pos_int, "an int >= 1 (1 normal window in N per entity is sampled)")
    margin: float = _spec(300.0, _nonneg, "seconds >= 0 (no normal sample this close before or after an episode)")
    fleet_share: float = _spec(0.5, lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
                               "a number in [0, 1] (share of the fleet alarming at once that means a new operating point; 0: off)")
    shift_span: float = _spec(0.0, _nonneg, "seconds >= 0 (after a fleet-wide shift a retrain learns the newest this "
                              "many seconds of the move; cover the plant's slowest regular cycle; 0: the span in which "
                              "the buffer collects min_windows windows)")
    state_dir: str | None = _spec(None, _opt_str, "a directory for the local buffer on disk, or unset (memory only)")
    schedule: float = _spec(0.0, _nonneg, "seconds >= 0 between scheduled retrains (0: none)")
    after_windows: int = _spec(0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                               "an int >= 0 (retrain after this many new buffered windows; 0: never)")
    drift: str = _spec("adwin", lambda v: v in ("adwin", "page_hinkley", "none"), "one of adwin, page_hinkley, none")
    drift_delta: float = _spec(0.002, lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)")
    min_interval: float = _spec(600.0, _nonneg, "seconds >= 0 between two retrains")
    min_windows: int = _spec(1_000, lambda v: _pos_int(v) and v >= 50, "an int >= 50 (buffered windows needed to retrain)")
    epochs: int = _spec(20, _pos_int, "an int >= 1")
    tolerance: float = _spec(0.01, lambda v: isinstance(v, (int, float)) and 0 <= v < 0.5, "a number in [0, 0.5)")
    samples_retention_ms: int = _spec(86_400_000, _pos_int, "an int >= 1 (retention of topics.samples)")


@dataclass(frozen=True)
class HttpConfig:
    host: str = _spec("127.0.0.1", _str, "an address to bind")
    port: int = _spec(0, lambda v: isinstance(v, int) and 0 <= v < 65536, "a port in [0, 65535] (0: none)")


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


def _from_env(text: str, default: Any, typ: Any) -> Any:
    """Parse an environment string by the type of the setting."""
    t = str(typ)
    low = text.strip().lower()
    if low in ("", "none", "null") and ("None" in t or default is None):
        return None
    if "bool" in t:
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        return text
    if "list" in t:
        return [p.strip() for p in text.split(",") if p.strip()]
    if "int" in t and "float" not in t:
        try:
            return int(text)
        except ValueError:
            return text
    if "float" in t:
        try:
            return float(text)
        except ValueError:
            return text
    return text


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
        cls = sec.default_factory  # type: ignore[misc]
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
        for key, v in kw.items():
            f = fields[key]
            if isinstance(v, int) and not isinstance(v, bool) and "float" in str(f.type):
                kw[key] = v = float(v)
            check = f.metadata.get("check")
            if check is not None and not check(v):
                shown = "***" if f.metadata.get("secret") else repr(v)
                raise ConfigError(f"{name}.{key} must be {f.metadata['allowed']}; got {shown}")
        built[name] = cls(**kw)
    cfg = Config(**built)
    if cfg.threshold.kind == "fixed" and cfg.threshold.value is None:
        raise ConfigError("threshold.value must be set when threshold.kind = 'fixed'")
    if cfg.kafka.security_protocol.startswith("SASL") and not (cfg.kafka.sasl_mechanism and cfg.kafka.sasl_username):
        raise ConfigError(f"kafka.sasl_mechanism and kafka.sasl_username must be set for security_protocol = {cfg.kafka.security_protocol}")
    return cfg
