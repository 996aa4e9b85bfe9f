#!/usr/bin/env python3
"""A throw-away single-node Apache Kafka broker (KRaft) on 127.0.0.1, run from Maven Central jars.

The genuine broker (``kafka_2.13``, version from ``pom.xml`` beside this file) in one JVM
that is both broker and controller, in a fresh run directory per start. Used two ways:

* ``scripts/kafka start|wait|status|stop|logs|fetch`` (this file's ``main``), which keeps
  the running broker in a state file, ``.cache/kafka-run/current.json``;
* from Python, e.g. a session fixture of the integration tests::

      broker = LocalBroker().start()   # fetch jars once, format, launch, wait until ready
      broker.bootstrap                 # '127.0.0.1:40123'
      broker.stop()                    # SIGTERM, then SIGKILL after 30 s

  ``LocalBroker(secure=True)`` (``scripts/kafka start --secure``) serves clients on one
  SASL_SSL listener instead: its own CA and certificate made with the JDK's keytool at
  start, PLAIN users in server.properties, SCRAM users created through the admin API;
  ``broker.credentials`` (:class:`Credentials`) has the generated passwords and the CA.

  ``start`` raises :class:`BrokerError` (with the tail of the broker's log) when the broker
  cannot start, so a fixture built on it fails instead of skipping.

Standard library only, plus kafka-python for the readiness probe (imported when needed).
It does not import streamvae. Load it by path, because ``deploy/`` is not a package and a
folder named ``kafka`` on ``sys.path`` would shadow kafka-python::

    spec = importlib.util.spec_from_file_location("streamvae_kafka_broker", ROOT / "deploy/kafka/broker.py")
    broker_mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = broker_mod
    spec.loader.exec_module(broker_mod)
    LocalBroker = broker_mod.LocalBroker
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POM = HERE / "pom.xml"
SERVER_TEMPLATE = HERE / "server.properties.template"
SECURE_TEMPLATE = HERE / "secure.properties.template"  # appended in secure mode
LOG4J_CONFIG = HERE / "log4j2.properties"
RUN_BASE = REPO / ".cache" / "kafka-run"
STATE_FILE = RUN_BASE / "current.json"
CACHE_ENV = "STREAMVAE_KAFKA_CACHE"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

HOST = "127.0.0.1"
# KAFKA.md: 256 MiB start / 512 MiB cap is plenty for a test broker on a 2-core machine.
JVM_OPTIONS: tuple[str, ...] = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
READY_TIMEOUT_S = 120.0  # KAFKA.md: typical start 5-15 s, allow 60-120 s on 2 cores
STOP_TIMEOUT_S = 30.0
BIND_RETRIES = 3  # fresh ports after "Address already in use"
KEEP_RUNS = 5  # finished run directories kept under .cache/kafka-run for their logs
# Secure mode: the broker's own PLAIN user (inter-broker, and the one that creates the
# SCRAM users) and the clients' user, which has one password for every mechanism.
ADMIN_USER = "admin"
CLIENT_USER = "streamvae"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CERT_DAYS = 30
# keytool is a JVM start each time: C1 only and the serial collector make each ~3x faster.
_KEYTOOL_JVM = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC")

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted, started, reached or stopped."""


# --------------------------------------------------------------------------------------
# jars
# --------------------------------------------------------------------------------------


def kafka_version(pom: Path = POM) -> str:
    """The version of ``org.apache.kafka:kafka_2.13`` that ``pom`` depends on."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    for dep in ET.parse(pom).getroot().iterfind("m:dependencies/m:dependency", ns):
        if dep.findtext("m:artifactId", namespaces=ns) == "kafka_2.13":
            version = dep.findtext("m:version", namespaces=ns)
            if version:
                return version.strip()
    raise BrokerError(f"{pom} has no org.apache.kafka:kafka_2.13 dependency with a version")


def default_cache() -> Path:
    """``$STREAMVAE_KAFKA_CACHE``, else ``~/.cache/streamvae/kafka-<version>``; jars go in ``libs/``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "streamvae" / f"kafka-{kafka_version()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_jars(cache: Path | None = None, *, progress: IO[str] | None = None) -> Path:
    """Copy the broker's runtime jars into ``<cache>/libs`` once; return that folder.

    Skipped when ``libs/.complete`` records the sha256 of the current ``pom.xml``; otherwise
    Maven copies them into a temporary folder that then replaces ``libs`` (so an interrupted
    fetch never leaves a half-filled cache). Maven's own downloads stay in ``~/.m2``.
    """
    cache = (cache or default_cache()).resolve()
    libs = cache / "libs"
    marker = libs / ".complete"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()

    def fresh() -> bool:
        return marker.is_file() and marker.read_text().strip() == want

    if fresh():
        return libs
    with _locked(cache / ".lock"):
        if fresh():  # another process fetched while we waited for the lock
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; it fetches the Kafka jars from Maven Central once")
        tmp = cache / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if progress is not None:
            print(f"kafka: fetching Kafka {kafka_version()} jars into {libs} (once)", file=progress, flush=True)
        cmd = [mvn, "-B", "-q", "-f", str(POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]  # fmt: skip
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        jars = sorted(tmp.glob("*.jar")) if tmp.is_dir() else []
        main_jar = f"kafka_2.13-{kafka_version()}.jar"
        if done.returncode != 0 or main_jar not in {j.name for j in jars}:
            shutil.rmtree(tmp, ignore_errors=True)
            out = _tail_text(done.stdout + done.stderr, 40)
            raise BrokerError(f"Maven could not fetch the Kafka jars (exit {done.returncode}): {' '.join(cmd)}\n{out}")
        (tmp / ".complete").write_text(want + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        os.replace(tmp, libs)
    return libs


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` if it exists, else ``java`` on PATH (Kafka 4.x needs 17+)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not on PATH (Kafka 4.x needs Java 17 or newer)")
    return java


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def find_keytool(java: str | None = None) -> str:
    """The JDK's ``keytool`` beside ``java`` (symlinks resolved), else on PATH."""
    beside = Path(java or find_java()).resolve().parent / "keytool"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("keytool")
    if found is None:
        raise BrokerError("keytool (from the JDK) is not on PATH; secure mode makes its certificates with it")
    return found


# --------------------------------------------------------------------------------------
# secure mode: certificates and credentials
# --------------------------------------------------------------------------------------


def _keytool_stage(keytool: str, folder: Path, calls: Sequence[Sequence[str]]) -> None:
    """Run independent keytool calls at once in ``folder``; BrokerError with the output of one that fails."""
    procs = [(c, subprocess.Popen([keytool, *_KEYTOOL_JVM, *c], cwd=folder, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)) for c in calls]  # fmt: skip
    failed = []
    for call, proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed.append(f"keytool {call[0]} {' '.join(a for a in call[1:3])} ... failed (exit {proc.returncode}):\n"
                          + _tail_text(out.decode("utf-8", "replace"), 20))
    if failed:
        raise BrokerError("\n".join(failed))


def _store(name: str, password: str) -> list[str]:
    return ["-storetype", "PKCS12", "-keystore", name, "-storepass", password, "-keypass", password]


# an EC P-256 key (quicker to make than RSA) in a certificate valid CERT_DAYS
_EC = ("-keyalg", "EC", "-groupname", "secp256r1", "-validity", str(CERT_DAYS))


def _ca_calls(name: str, password: str) -> tuple[list[str], list[str]]:
    """The keytool calls that make a CA in ``ca.p12``, then export it as ``ca.pem``."""
    return (["-genkeypair", "-alias", "ca", *_EC, "-dname", f"CN={name}", "-ext", "bc:c=ca:true",
             "-ext", "KU:c=keyCertSign,cRLSign", *_store("ca.p12", password)],
            ["-exportcert", "-rfc", "-alias", "ca", "-file", "ca.pem", *_store("ca.p12", password)])  # fmt: skip


def make_ca(folder: str | os.PathLike[str], password: str, name: str = "streamvae test CA",
            keytool: str | None = None) -> Path:
    """A new self-signed CA in ``folder/ca.p12`` (PKCS12, ``password``); its certificate as PEM,
    ``folder/ca.pem``, which is returned (what a Python client's ``ssl_cafile`` names)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    kt = keytool or find_keytool()
    make, export = _ca_calls(name, password)
    _keytool_stage(kt, d, [make])
    _keytool_stage(kt, d, [export])
    return d / "ca.pem"


def make_certificates(folder: str | os.PathLike[str], password: str, keytool: str | None = None) -> Path:
    """The broker's TLS files in ``folder``, all PKCS12 with ``password``, made with keytool:

    ``ca.p12`` / ``ca.pem`` a new CA; ``broker.p12`` the broker's EC key and its certificate
    (CN=localhost, SAN IP:127.0.0.1 and DNS:localhost, signed by the CA, with the CA in its
    chain); ``truststore.p12`` the CA alone. Returns the CA's PEM (for ``ssl_cafile``).
    Four rounds of keytool calls, the calls of a round at once (each is a JVM start)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    kt = keytool or find_keytool()

    def store(name: str) -> list[str]:
        return _store(name, password)

    san = ["-ext", "SAN=IP:127.0.0.1,DNS:localhost"]
    make_ca_key, export_ca = _ca_calls("streamvae test CA", password)
    _keytool_stage(kt, d, [make_ca_key, ["-genkeypair", "-alias", "broker", *_EC, "-dname", "CN=localhost", *san,
                                         *store("broker.p12")]])  # fmt: skip
    _keytool_stage(kt, d, [export_ca, ["-certreq", "-alias", "broker", "-file", "broker.csr", *store("broker.p12")]])
    _keytool_stage(kt, d, [["-gencert", "-alias", "ca", "-infile", "broker.csr", "-outfile", "broker.pem", "-rfc",
                            "-validity", str(CERT_DAYS), *san, "-ext", "KU:c=digitalSignature",
                            "-ext", "EKU=serverAuth,clientAuth", *store("ca.p12")]])  # fmt: skip
    # the reply with its whole chain: keytool installs it without the CA in the keystore first
    (d / "broker-chain.pem").write_bytes((d / "broker.pem").read_bytes() + (d / "ca.pem").read_bytes())
    _keytool_stage(kt, d, [
        ["-importcert", "-noprompt", "-alias", "broker", "-file", "broker-chain.pem", *store("broker.p12")],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", *store("truststore.p12")],
    ])  # fmt: skip
    return d / "ca.pem"


class Credentials:
    """What a client of a secure broker needs: the CA, the client user and the admin user.

    ``client_user`` has ``client_password`` for PLAIN and both SCRAM mechanisms;
    ``admin_user`` is PLAIN only (the broker's own inter-broker login). Passwords are
    generated per run. ``repr`` hides them.
    """

    def __init__(self, ca_pem: Path, store_password: str, admin_password: str, client_password: str,
                 client_user: str = CLIENT_USER, admin_user: str = ADMIN_USER) -> None:
        self.ca_pem = Path(ca_pem)
        self.store_password = store_password
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.client_user = client_user
        self.client_password = client_password

    @classmethod
    def generate(cls, tls: Path) -> Credentials:
        return cls(tls / "ca.pem", secrets.token_urlsafe(18), secrets.token_urlsafe(18), secrets.token_urlsafe(18))

    def client_args(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
        """kafka-python keyword arguments for SASL_SSL as the client user."""
        return self._args(mechanism, self.client_user, self.client_password)

    def admin_args(self) -> dict[str, Any]:
        """kafka-python keyword arguments for SASL_SSL as the admin user (PLAIN)."""
        return self._args("PLAIN", self.admin_user, self.admin_password)

    def _args(self, mechanism: str, user: str, password: str) -> dict[str, Any]:
        return {"security_protocol": "SASL_SSL", "ssl_cafile": str(self.ca_pem), "sasl_mechanism": mechanism,
                "sasl_plain_username": user, "sasl_plain_password": password}

    def to_json(self) -> dict[str, str]:
        return {"ca_pem": str(self.ca_pem), "store_password": self.store_password, "admin_user": self.admin_user,
                "admin_password": self.admin_password, "client_user": self.client_user,
                "client_password": self.client_password}

    @classmethod
    def from_json(cls, d: Mapping[str, str]) -> Credentials:
        return cls(Path(d["ca_pem"]), d["store_password"], d["admin_password"], d["client_password"],
                   d["client_user"], d["admin_user"])

    def __repr__(self) -> str:
        return f"Credentials(ca_pem={str(self.ca_pem)!r}, client_user={self.client_user!r}, admin_user={self.admin_user!r})"


def _write_secret(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only (it holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def write_client_files(run_dir: Path, bootstrap: str, cred: Credentials, mechanism: str = "SCRAM-SHA-512") -> dict[str, Path]:
    """The client settings of a secure run, each file readable by its owner only:

    ``streamvae-kafka.toml`` the ``[kafka]`` section of a streamvae config;
    ``streamvae-kafka.env`` the same as ``STREAMVAE_KAFKA__*`` exports (``streamvae
    simulate`` / ``alerts`` / ``report --bootstrap`` read them); ``client.properties`` for
    Java clients and Kafka's own tools (truststore PKCS12)."""
    kafka = {"bootstrap_servers": bootstrap, "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
             "sasl_username": cred.client_user, "sasl_password": cred.client_password, "ssl_cafile": str(cred.ca_pem)}
    files = {name: run_dir / name for name in ("streamvae-kafka.toml", "streamvae-kafka.env", "client.properties")}
    _write_secret(files["streamvae-kafka.toml"], "[kafka]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kafka.items()))
    _write_secret(files["streamvae-kafka.env"],
                  "".join(f"export STREAMVAE_KAFKA__{k.upper()}={shlex.quote(v)}\n" for k, v in kafka.items()))
    module = "scram.ScramLoginModule" if mechanism.startswith("SCRAM") else "plain.PlainLoginModule"
    _write_secret(files["client.properties"], (
        f"bootstrap.servers={bootstrap}\nsecurity.protocol=SASL_SSL\nsasl.mechanism={mechanism}\n"
        f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
        f'username="{cred.client_user}" password="{cred.client_password}";\n'
        f"ssl.truststore.type=PKCS12\nssl.truststore.location={cred.ca_pem.parent / 'truststore.p12'}\n"
        f"ssl.truststore.password={cred.store_password}\n"
    ))  # fmt: skip
    return files


def free_port(exclude: Sequence[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def random_cluster_id() -> str:
    """What ``StorageTool random-uuid`` prints: URL-safe base64 of 16 random bytes, no padding.

    Like Kafka's ``Uuid.randomUuid`` it never starts with '-', so it cannot read as a flag.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _tail_text(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def _tail_file(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            return _tail_text(fh.read().decode("utf-8", "replace"), n)
    except FileNotFoundError:
        return f"(no log at {path})"


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line contains ``marker``.

    The marker (the run's server.properties path) guards against a recycled pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` when available: the JVM gets SIGTERM if its parent dies.

    Keeps a test run that is killed (CI timeout, SIGKILL) from leaving a broker behind.
    The signal fires when the *thread* that started the broker ends, so start a broker
    that must outlive its thread with ``detach=True`` (as the CLI does).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv and sys.platform.startswith("linux") else []


def probe(bootstrap: str, timeout: float = 5.0, security: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """``describe_cluster()`` of the broker at ``bootstrap``, or None if it does not answer in time.

    A TCP connect is tried first (cheap, and the admin client is only built once the port
    accepts); an open port alone proves nothing, the broker answers requests later.
    Ready means: a cluster id, at least one broker, and a known controller. ``security``:
    kafka-python's SSL / SASL arguments (a secure broker: :meth:`Credentials.admin_args`).
    """
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 1.0)):
            pass
    except OSError:
        return None
    try:
        from kafka.admin import KafkaAdminClient
    except ImportError as exc:  # pragma: no cover - depends on the interpreter
        raise BrokerError(f"kafka-python is not importable from {sys.executable}; run scripts/setup") from exc
    ms = max(500, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="streamvae-broker-probe",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            reconnect_backoff_max_ms=500,
            **(security or {}),
        )
    except Exception:  # noqa: BLE001 - any failure here means "not ready yet"
        return None
    try:
        info: dict[str, Any] = admin.describe_cluster()
    except Exception:  # noqa: BLE001
        return None
    finally:
        admin.close()
    if not info.get("cluster_id") or not info.get("brokers") or info.get("controller_id", -1) < 0:
        return None
    return info


# --------------------------------------------------------------------------------------
# the broker
# --------------------------------------------------------------------------------------


class LocalBroker:
    """One single-node KRaft Kafka broker on 127.0.0.1 in a fresh run directory.

    Parameters
    ----------
    run_dir : path, optional
        Directory for this run (server.properties, data/, logs/, kafka.out); it must not
        exist or be empty. Default: a new ``.cache/kafka-run/<timestamp>-<hex>/`` in the repo.
    port : int, optional
        Client (PLAINTEXT) port. Default: a free port, re-picked on "Address already in use".
    controller_port : int, optional
        KRaft controller port. Default: a free port.
    cache : path, optional
        Jar cache folder (jars in ``<cache>/libs``). Default: :func:`default_cache`.
    properties : mapping, optional
        Extra or overriding server.properties entries, appended verbatim (later keys win).
    jvm_options : sequence of str
        Heap and GC flags for the broker JVM. Default: :data:`JVM_OPTIONS`.
    detach : bool
        Start the JVM in its own session, free to outlive this process (the CLI does).
        Default False: the JVM also gets SIGTERM if the thread that started it dies.
    state_file : path, optional
        Where to record pid / bootstrap / run dir once launched; removed by :meth:`stop`.
    secure : bool
        One SASL_SSL listener for clients (``port``) instead of PLAINTEXT: a CA and the
        broker's certificate made with keytool in ``<run>/tls``, PLAIN users in
        server.properties (``secure.properties.template``), SCRAM-SHA-256/512 users created
        through the admin API once the broker is up, the client settings written to the
        run directory (:func:`write_client_files`). Default False.

    Attributes (set by :meth:`start`)
    ----------------------------------
    bootstrap, port, controller_port, run_dir, log_path, pid, cluster_id, ready_seconds,
    credentials (secure mode: a :class:`Credentials`, else None)
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        cache: str | os.PathLike[str] | None = None,
        properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = JVM_OPTIONS,
        detach: bool = False,
        state_file: str | os.PathLike[str] | None = None,
        secure: bool = False,
    ) -> None:
        self._want_run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self._want_port = port
        self._want_controller_port = controller_port
        self.cache = Path(cache).resolve() if cache is not None else None
        self.properties = dict(properties or {})
        self.jvm_options = tuple(jvm_options)
        self.detach = detach
        self.state_file = Path(state_file).resolve() if state_file is not None else None
        self.secure = secure
        self.credentials: Credentials | None = None

        self.run_dir: Path | None = None
        self.port: int | None = None
        self.controller_port: int | None = None
        self.pid: int | None = None
        self.cluster_id: str | None = None
        self.ready_seconds: float | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at: float | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``'127.0.0.1:<port>'``, for ``bootstrap_servers``."""
        if self.port is None:
            raise BrokerError("the broker has not been started; call start() first")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The JVM's stdout + stderr (the console appender); logs/server.log has the same lines."""
        if self.run_dir is None:
            raise BrokerError("the broker has not been started; call start() first")
        return self.run_dir / "kafka.out"

    def start(self, timeout: float = READY_TIMEOUT_S) -> LocalBroker:
        """Fetch the jars (once), format a fresh run directory, launch, and wait until ready.

        Raises :class:`BrokerError` with the log tail if the broker exits or is not ready
        within ``timeout`` seconds; the JVM is then stopped. Returns ``self``.
        """
        if self.is_running():
            return self
        libs = fetch_jars(self.cache)
        java = find_java()
        for attempt in range(1, BIND_RETRIES + 1):
            try:
                self._launch(java, libs)
                self.wait(timeout)
                if self.secure:
                    self._add_scram_users(timeout)
                return self
            except BrokerError:
                in_use = self.run_dir is not None and "Address already in use" in self.log_tail(400)
                self._kill()
                if in_use and attempt < BIND_RETRIES:
                    log.warning("kafka: port clash on %s (attempt %d); retrying with new ports", self.bootstrap, attempt)
                    continue
                raise
            except BaseException:  # KeyboardInterrupt and the like: leave no JVM behind
                self._kill()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def restart(self, timeout: float = READY_TIMEOUT_S) -> LocalBroker:
        """Start a STOPPED broker again on the same ports and data (no new format): the
        topics, messages and committed offsets are still there. For outage tests."""
        if self.is_running():
            return self
        if self.run_dir is None or self.port is None:
            raise BrokerError("restart() needs a broker that was started (and stopped) before")
        # no port_is_free() here: the old broker's sockets linger in TIME_WAIT, which a
        # plain bind refuses but Kafka's (SO_REUSEADDR) accepts; a real clash shows in wait().
        libs = fetch_jars(self.cache)
        log4j = self.run_dir / "log4j2.properties"
        jvm = [find_java(), f"-Dkafka.logs.dir={self.run_dir / 'logs'}", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
        self.ready_seconds = None
        self.returncode = None
        self._spawn(jvm, self.run_dir / "server.properties")
        try:
            return self.wait(timeout)
        except BaseException:
            self._kill()
            raise

    def wait(self, timeout: float = READY_TIMEOUT_S) -> LocalBroker:
        """Poll ``describe_cluster()`` until it answers; fail fast if the JVM has exited."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                code = "" if self.returncode is None else f" with code {self.returncode}"
                raise BrokerError(
                    f"Kafka (pid {self.pid}, {self.bootstrap}) is not running: it exited{code}; "
                    f"last lines of {self.log_path}:\n{self.log_tail(40)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"Kafka at {self.bootstrap} was not ready after {timeout:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail(40)}"
                )
            if probe(self.bootstrap, timeout=min(5.0, max(0.5, remaining)), security=self.admin_args()) is not None:
                if self._started_at is not None and self.ready_seconds is None:
                    self.ready_seconds = time.monotonic() - self._started_at
                return self
            time.sleep(0.25)

    def is_running(self) -> bool:
        """Whether the broker JVM is alive (ready or not)."""
        if self._proc is not None:
            code = self._proc.poll()
            if code is not None:
                self.returncode = code
            return code is None
        if self.pid is None or self.run_dir is None:
            return False
        return _pid_alive(self.pid, str(self.run_dir / "server.properties"))

    def is_ready(self, timeout: float = 5.0) -> bool:
        """Whether the broker is alive and answers ``describe_cluster()`` within ``timeout``."""
        return self.is_running() and probe(self.bootstrap, timeout, self.admin_args()) is not None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM (a clean controlled shutdown), then SIGKILL after ``timeout`` seconds.

        Returns True if the broker ended on SIGTERM (or was not running), False if it had
        to be killed. Removes the state file, keeps the run directory (its logs).
        """
        clean = True
        if self.is_running():
            assert self.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout):
                log.warning("kafka: pid %d still running %.0f s after SIGTERM; sending SIGKILL", self.pid, timeout)
                clean = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                if not self._wait_exit(10.0):
                    raise BrokerError(f"Kafka (pid {self.pid}) survived SIGKILL")
        self._remove_state_file()
        return clean

    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of the broker's console log (kafka.out)."""
        return _tail_file(self.log_path, n)

    def state(self) -> dict[str, Any]:
        """What the state file records: pid, bootstrap, run dir, log path, ports, versions."""
        return {
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "run_dir": str(self.run_dir),
            "log": str(self.log_path),
            "cluster_id": self.cluster_id,
            "kafka_version": kafka_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "secure": self.secure,
        }

    @classmethod
    def attach(cls, state_file: str | os.PathLike[str] = STATE_FILE) -> LocalBroker | None:
        """A handle on the broker a state file describes (e.g. one started by ``scripts/kafka``).

        Returns None if there is no state file. The handle can wait, probe and stop it.
        """
        path = Path(state_file)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise BrokerError(f"{path} is not valid JSON ({exc}); remove it") from exc
        broker = cls(port=data["port"], controller_port=data.get("controller_port"), state_file=path,
                     secure=bool(data.get("secure")))
        broker.port = int(data["port"])
        broker.controller_port = data.get("controller_port")
        broker.pid = int(data["pid"])
        broker.run_dir = Path(data["run_dir"])
        broker.cluster_id = data.get("cluster_id")
        if broker.secure:
            try:
                broker.credentials = Credentials.from_json(json.loads((broker.run_dir / "secure.json").read_text()))
            except (OSError, ValueError, KeyError) as exc:
                raise BrokerError(f"secure broker's {broker.run_dir / 'secure.json'} cannot be read ({exc})") from exc
        return broker

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self.port is not None else "not started"
        return f"LocalBroker({where}, pid={self.pid}, run_dir={self.run_dir}{', secure' if self.secure else ''})"

    def client_args(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
        """kafka-python arguments to reach this broker: ``bootstrap_servers``, and in secure
        mode SASL_SSL as the client user with ``mechanism`` (PLAIN, SCRAM-SHA-256/512)."""
        sec = self.credentials.client_args(mechanism) if self.credentials is not None else {}
        return {"bootstrap_servers": self.bootstrap, **sec}

    def admin_args(self) -> dict[str, Any] | None:
        """Secure mode: kafka-python's SASL_SSL arguments as the PLAIN admin user (the
        readiness probe uses them); None for a plain broker."""
        return self.credentials.admin_args() if self.credentials is not None else None

    # -- internals ---------------------------------------------------------------------

    def _add_scram_users(self, timeout: float) -> None:
        """Give the client user SCRAM-SHA-256/512 credentials through the admin API (as the
        PLAIN admin), then wait until a SCRAM-SHA-512 login works (the credentials reach
        the broker's authenticator through the metadata log, a moment later)."""
        from kafka.admin import KafkaAdminClient, UserScramCredentialUpsertion

        assert self.credentials is not None and self.run_dir is not None
        cred = self.credentials
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="streamvae-broker-users",
                                 **cred.admin_args())  # fmt: skip
        try:
            for mech in SCRAM_MECHANISMS:  # one request each: the broker refuses a user twice in one
                errors = admin.alter_user_scram_credentials(
                    [UserScramCredentialUpsertion(cred.client_user, mech, cred.client_password)])
                bad = {u: e for u, e in errors.items() if e}
                if bad:
                    raise BrokerError(f"creating the {mech} credentials of {cred.client_user!r} failed: {bad}")
        finally:
            admin.close()
        deadline = time.monotonic() + timeout
        while probe(self.bootstrap, 5.0, cred.client_args("SCRAM-SHA-512")) is None:
            if time.monotonic() > deadline:
                raise BrokerError(f"SCRAM-SHA-512 login of {cred.client_user!r} at {self.bootstrap} did not work within "
                                  f"{timeout:.0f} s after creating it; last lines of {self.log_path}:\n{self.log_tail(40)}")
            time.sleep(0.2)
        write_client_files(self.run_dir, self.bootstrap, cred)

    def _launch(self, java: str, libs: Path) -> None:
        """Pick ports, render and format a fresh run directory, and start the JVM (no wait)."""
        self.ready_seconds = None
        self.returncode = None
        self.port = self._want_port or free_port()
        if self._want_port is not None and not port_is_free(self._want_port):
            raise BrokerError(f"port {self._want_port} on {HOST} is in use; pick another or omit port")
        self.controller_port = self._want_controller_port or free_port(exclude=[self.port])

        if self._want_run_dir is not None:
            run_dir = self._want_run_dir
            if run_dir.exists() and any(run_dir.iterdir()):
                if self.run_dir == run_dir:  # our own failed attempt: start it over
                    shutil.rmtree(run_dir)
                else:
                    raise BrokerError(f"run directory {run_dir} is not empty; Kafka needs a fresh one per start")
        else:
            prune_runs(RUN_BASE, KEEP_RUNS)
            run_dir = RUN_BASE / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.run_dir = run_dir
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)

        props = run_dir / "server.properties"
        text = SERVER_TEMPLATE.read_text().format(port=self.port, ctrl=self.controller_port, data_dir=run_dir / "data")
        if self.secure:
            text += "\n" + self._secure_properties(java, run_dir)
        if self.properties:
            text += "\n# --- overrides from LocalBroker(properties=...) ---\n"
            text += "".join(f"{k}={v}\n" for k, v in self.properties.items())
        if self.secure:
            _write_secret(props, text)  # it holds the passwords
        else:
            props.write_text(text)
        log4j = run_dir / "log4j2.properties"
        shutil.copyfile(LOG4J_CONFIG, log4j)

        jvm = [java, f"-Dkafka.logs.dir={run_dir / 'logs'}", f"-Dlog4j2.configurationFile={log4j}",
               "-cp", f"{libs}/*"]  # fmt: skip  (an argv entry: java, not a shell, expands the *)

        # 1. format the fresh data directory with a new cluster id (a short-lived, small JVM)
        self.cluster_id = random_cluster_id()
        with open(run_dir / "format.out", "wb") as out:
            done = subprocess.run(
                [jvm[0], "-Xmx256m", *jvm[1:], "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir, timeout=180,
            )  # fmt: skip
        if done.returncode != 0:
            raise BrokerError(
                f"kafka.tools.StorageTool format failed (exit {done.returncode}); "
                f"{run_dir / 'format.out'}:\n{_tail_file(run_dir / 'format.out', 30)}"
            )

        # 2. launch the broker + controller; its console goes to kafka.out
        self._spawn(jvm, props)

    def _secure_properties(self, java: str, run_dir: Path) -> str:
        """Make the run's certificates and passwords; the secure block of server.properties."""
        tls = run_dir / "tls"
        tls.mkdir(mode=0o700)
        cred = self.credentials = Credentials.generate(tls)
        _write_secret(run_dir / "secure.json", json.dumps(cred.to_json(), indent=2) + "\n")  # what attach() reads
        make_certificates(tls, cred.store_password, find_keytool(java))
        return SECURE_TEMPLATE.read_text().format(
            port=self.port, ctrl=self.controller_port, tls=tls, store_password=cred.store_password,
            admin_password=cred.admin_password, client_user=cred.client_user, client_password=cred.client_password)

    def _spawn(self, jvm: list[str], props: Path) -> None:
        run_dir = props.parent
        argv = [*jvm[:1], *self.jvm_options, *jvm[1:], "kafka.Kafka", str(props)]
        if not self.detach:
            argv = _pdeathsig_prefix() + argv  # setpriv execs java: the pid stays java's
        with open(run_dir / "kafka.out", "ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir,
                start_new_session=self.detach,
            )  # fmt: skip
        self.pid = self._proc.pid
        self._started_at = time.monotonic()
        (run_dir / "broker.json").write_text(json.dumps(self.state(), indent=2) + "\n")
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
            os.replace(tmp, self.state_file)

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self.returncode = self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.1)
        return not self.is_running()

    def _kill(self) -> None:
        """Stop a JVM that failed to become ready (or whose start was interrupted)."""
        if self.pid is not None and self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(10.0)
        self._remove_state_file()

    def _remove_state_file(self) -> None:
        if self.state_file is None:
            return
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            if json.loads(self.state_file.read_text()).get("pid") == self.pid:
                self.state_file.unlink()


def prune_runs(base: Path, keep: int = KEEP_RUNS) -> None:
    """Delete all but the newest ``keep`` run directories under ``base``; never a live one."""
    if not base.is_dir():
        return
    runs = sorted((p for p in base.iterdir() if p.is_dir() and (p / "server.properties").exists()), reverse=True)
    for old in runs[keep:]:
        try:
            pid = int(json.loads((old / "broker.json").read_text())["pid"])
        except (FileNotFoundError, ValueError, KeyError):
            pid = None
        if pid is not None and _pid_alive(pid, str(old / "server.properties")):
            continue
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------
# command line: scripts/kafka
# --------------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(f"kafka: {msg}", file=sys.stderr, flush=True)


def _cmd_start(args: argparse.Namespace) -> int:
    with _locked(RUN_BASE / ".lock"):
        running = LocalBroker.attach(STATE_FILE)
        if running is not None and running.is_running():
            if running.secure != args.secure:
                _say(f"a {'secure' if running.secure else 'plain (PLAINTEXT)'} broker is already running at "
                     f"{running.bootstrap} (pid {running.pid}); stop it first to start a "
                     f"{'secure' if args.secure else 'plain'} one")
                return 1
            if args.port and args.port != running.port:
                _say(f"already running on port {running.port} (not {args.port}); stop it first to change ports")
            _say(f"already running (pid {running.pid}, run dir {running.run_dir})")
            running.wait(args.timeout)
            _say_secure(running)
            print(running.bootstrap)
            return 0
        if running is not None:
            _say(f"removing stale state file {STATE_FILE} (pid {running.pid} is gone)")
            STATE_FILE.unlink(missing_ok=True)

        t0 = time.monotonic()
        fetch_jars(progress=sys.stderr)
        fetched = time.monotonic() - t0
        broker = LocalBroker(run_dir=args.run_dir, port=args.port, detach=True, state_file=STATE_FILE, secure=args.secure)
        _say(f"starting Kafka {kafka_version()} (KRaft, single node{', SASL_SSL' if args.secure else ''}) on {HOST}")
        try:
            broker.start(timeout=args.timeout)
        except BrokerError as exc:
            _say(f"could not start: {exc}")
            return 1
    _say(
        f"ready at {broker.bootstrap} after {time.monotonic() - t0:.1f} s "
        f"(jars {fetched:.1f} s, start-to-ready {broker.ready_seconds or 0:.1f} s); "
        f"pid {broker.pid}, run dir {broker.run_dir}, log {broker.log_path}"
    )
    _say_secure(broker)
    print(broker.bootstrap)
    return 0


def _say_secure(broker: LocalBroker) -> None:
    """A secure broker's user, password, CA and client files, for the person who started it."""
    cred, run = broker.credentials, broker.run_dir
    if cred is None or run is None:
        return
    _say(f"SASL_SSL at {broker.bootstrap}: user {cred.client_user!r} password {cred.client_password!r} "
         f"(PLAIN, {', '.join(SCRAM_MECHANISMS)}); CA certificate {cred.ca_pem}")
    _say(f"streamvae: the [kafka] section {run / 'streamvae-kafka.toml'}, or eval \"$(scripts/kafka env)\" (the "
         f"STREAMVAE_KAFKA__* of {run / 'streamvae-kafka.env'}); Java clients: {run / 'client.properties'}")


def _attached_or_none() -> LocalBroker | None:
    broker = LocalBroker.attach(STATE_FILE)
    if broker is None:
        _say(f"not running (no {STATE_FILE.relative_to(REPO)}); start one with scripts/kafka start")
    return broker


def _cmd_wait(args: argparse.Namespace) -> int:
    broker = _attached_or_none()
    if broker is None:
        return 1
    try:
        broker.wait(args.timeout)
    except BrokerError as exc:
        _say(str(exc))
        return 1
    print(broker.bootstrap)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    broker = _attached_or_none()
    if broker is None:
        return 1
    alive = broker.is_running()
    info = probe(broker.bootstrap, args.timeout, broker.admin_args()) if alive else None
    status = "up" if info is not None else ("starting-or-unresponsive" if alive else "down")
    extra = (f" cluster_id={info['cluster_id']}" if info else "") + (" secure=SASL_SSL" if broker.secure else "")
    print(f"{broker.bootstrap} {status} pid={broker.pid} run_dir={broker.run_dir}{extra}")
    return 0 if info is not None else 1


def _cmd_stop(args: argparse.Namespace) -> int:
    with _locked(RUN_BASE / ".lock"):
        broker = LocalBroker.attach(STATE_FILE)
        if broker is None:
            _say("not running")
            return 0
        if not broker.is_running():
            _say(f"pid {broker.pid} is already gone; removing {STATE_FILE.relative_to(REPO)}")
            STATE_FILE.unlink(missing_ok=True)
            return 0
        t0 = time.monotonic()
        clean = broker.stop(args.timeout)
    how = "shut down on SIGTERM" if clean else "killed with SIGKILL after the SIGTERM timeout"
    _say(f"pid {broker.pid} {how} in {time.monotonic() - t0:.1f} s; logs kept in {broker.run_dir}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    """``export STREAMVAE_KAFKA__...`` lines for the running broker, for ``eval``."""
    broker = _attached_or_none()
    if broker is None:
        return 1
    if broker.secure and broker.run_dir is not None:
        print((broker.run_dir / "streamvae-kafka.env").read_text(), end="")
    else:
        print(f"export STREAMVAE_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    broker = _attached_or_none()
    if broker is None:
        return 1
    print(broker.log_tail(args.lines))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    libs = fetch_jars(progress=sys.stderr)
    jars = list(libs.glob("*.jar"))
    size = sum(j.stat().st_size for j in jars)
    _say(f"{len(jars)} jars, {size / 2**20:.1f} MiB in {libs} ({time.monotonic() - t0:.1f} s)")
    print(libs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/kafka",
        description="A throw-away single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests and demos.",
        epilog=f"Jars are cached in ${CACHE_ENV} or ~/.cache/streamvae/kafka-<version>; runs live in {RUN_BASE}.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start one (or report the running one); prints the bootstrap last")
    p.add_argument("--port", type=int, help="client port (default: a free one)")
    p.add_argument("--run-dir", help="fresh directory for this run (default: a new one under .cache/kafka-run/)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for readiness (%(default)s)")
    p.add_argument("--secure", action="store_true",
                   help="one SASL_SSL listener (PLAIN, SCRAM-SHA-256/512; a CA made with keytool); prints the password")
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("wait", help="wait until the running broker answers describe_cluster()")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds (%(default)s)")
    p.set_defaults(func=_cmd_wait)
    p = sub.add_parser("status", help="print bootstrap and state; exit 0 if up, 1 if not")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for the probe (%(default)s)")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after --timeout seconds")
    p.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S, help="seconds (%(default)s)")
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("env", help="print export STREAMVAE_KAFKA__... lines for the running broker: eval \"$(scripts/kafka env)\"")
    p.set_defaults(func=_cmd_env)
    p = sub.add_parser("logs", help="print the tail of the running broker's log")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.set_defaults(func=_cmd_logs)
    p = sub.add_parser("fetch", help="only fetch the jars into the cache (e.g. in CI before the tests)")
    p.set_defaults(func=_cmd_fetch)
    args = parser.parse_args(argv)

    # kafka-python logs failed bootstrap attempts while the broker starts; they are expected.
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False
    logging.basicConfig(level=logging.WARNING, format="kafka: %(message)s")
    try:
        return int(args.func(args))
    except BrokerError as exc:
        _say(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
