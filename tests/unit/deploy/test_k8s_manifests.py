"""deploy/k8s: every manifest loads as YAML with the expected kinds, the ConfigMap's TOML
loads with the daemon's own ``load_config``, every ``STREAMVAE_*`` variable named in the
deployment files is a configuration key the code reads, and the pieces fit together
(config path, ports, probes, volumes, the Secret)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamvae.cli import build_parser
from streamvae.config import ENV_PREFIX, Config, load_config

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KINDS = {"configmap.yaml": "ConfigMap", "pvc.yaml": "PersistentVolumeClaim", "deployment.yaml": "Deployment",
         "cronjob.yaml": "CronJob", "kustomization.yaml": "Kustomization"}
SECRET_ENV = f"{ENV_PREFIX}KAFKA__SASL_PASSWORD"
# STREAMVAE_* variables that are not configuration keys; each must be read by the code
NOT_CONFIG = {"STREAMVAE_LOCK_DIR", "STREAMVAE_SKAB_DATA", "STREAMVAE_NAB_DATA"}


def load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    assert len(docs) == 1 and isinstance(docs[0], dict), name
    return docs[0]


def pod(name: str) -> dict[str, Any]:
    m = load(name)
    spec = m["spec"]["jobTemplate"]["spec"] if m["kind"] == "CronJob" else m["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def config_keys() -> set[str]:
    """Every STREAMVAE_<SECTION>__<KEY> that streamvae.config.load_config reads."""
    return {f"{ENV_PREFIX}{s.name.upper()}__{f.name.upper()}" for s in dataclasses.fields(Config)
            for f in dataclasses.fields(s.default_factory())}  # type: ignore[misc]


@pytest.fixture(scope="module")
def toml_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("k8s") / "streamvae.toml"
    p.write_text(load("configmap.yaml")["data"]["streamvae.toml"])
    return p


def test_every_manifest_loads_with_its_kind() -> None:
    assert sorted(p.name for p in K8S.glob("*.y*ml")) == sorted(KINDS)
    for name, kind in KINDS.items():
        m = load(name)
        assert m["kind"] == kind and m["apiVersion"], name
        if kind != "Kustomization":
            assert m["metadata"]["name"].startswith("streamvae"), name
    assert sorted(load("kustomization.yaml")["resources"]) == sorted(set(KINDS) - {"kustomization.yaml"})


def test_the_configmap_toml_loads_with_the_daemons_config(toml_file: Path) -> None:
    text = toml_file.read_text()
    assert "sasl_password" not in text.replace("# sasl_password", ""), "the password belongs in the Secret"
    cfg = load_config(toml_file, env={SECRET_ENV: "from-the-secret"})  # unknown keys and bad values raise
    assert cfg.kafka.security_protocol.startswith("SASL")  # which is why the Secret is needed
    assert cfg.http.host == "0.0.0.0" and cfg.http.port > 0  # probes reach it from the kubelet
    assert not cfg.retrain.enabled and cfg.retrain.buffer == "kafka"  # the CronJob retrains, on every daemon's samples


def test_every_streamvae_variable_in_the_deployment_files_is_a_config_key() -> None:
    keys = config_keys()
    files = [*K8S.glob("*.yaml"), *(DEPLOY / "systemd").iterdir(), DEPLOY / "docker" / "Dockerfile", DEPLOY / "README.md"]
    named = {(f.name, v) for f in files for v in re.findall(r"\bSTREAMVAE_[A-Z0-9]+(?:__[A-Z0-9_]+)?", f.read_text())}
    assert SECRET_ENV in {v for _, v in named}
    bad = sorted((f, v) for f, v in named if v not in keys and v not in NOT_CONFIG)
    assert not bad, f"not configuration keys (streamvae/config.py): {bad}"
    code = "".join(p.read_text() for p in (ROOT / "streamvae").rglob("*.py"))
    assert all(v in code for v in NOT_CONFIG)


@pytest.mark.parametrize("name", ["deployment.yaml", "cronjob.yaml"])
def test_pods_run_the_cli_as_non_root_with_the_configmap_and_the_secret(name: str, toml_file: Path) -> None:
    spec = pod(name)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    (c,) = spec["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    args = build_parser().parse_args(c["args"])
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts.values()) == set(volumes)
    cfg_dir = str(Path(args.config).parent)
    assert volumes[mounts[cfg_dir]]["configMap"]["name"] == load("configmap.yaml")["metadata"]["name"]
    assert Path(args.config).name in load("configmap.yaml")["data"]
    env = {e["name"]: e for e in c["env"]}
    assert env[SECRET_ENV]["valueFrom"]["secretKeyRef"]["name"]
    assert all("value" not in e for n, e in env.items() if "PASSWORD" in n)  # never a literal
    cfg = load_config(toml_file, env={SECRET_ENV: "x"})
    # the registry is on the shared claim
    models = next(v for p, v in mounts.items() if cfg.model.path.startswith(p))
    assert volumes[models]["persistentVolumeClaim"]["claimName"] == load("pvc.yaml")["metadata"]["name"]


def test_the_deployment_probes_and_ports() -> None:
    d = load("deployment.yaml")
    assert "partition" in (K8S / "deployment.yaml").read_text().split("replicas:")[0]  # the comment says why
    assert d["spec"]["replicas"] >= 1
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert build_parser().parse_args(c["args"]).command == "run"
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    cfg = load_config(None, env={f"{ENV_PREFIX}HTTP__PORT": str(port)})
    toml = load("configmap.yaml")["data"]["streamvae.toml"]
    assert f"port = {port}" in toml and cfg.http.port == port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["terminationGracePeriodSeconds"] >= 70  # the daemon's SIGTERM shutdown (see the systemd unit)
    sel = d["spec"]["selector"]["matchLabels"]
    assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_the_cronjob_retrains_one_at_a_time() -> None:
    cj = load("cronjob.yaml")
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cj["spec"]["schedule"].split()) == 5
    (c,) = pod("cronjob.yaml")["containers"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "retrain" and args.quiet
    assert pod("cronjob.yaml")["restartPolicy"] in ("Never", "OnFailure")


def test_the_pvc_is_shared() -> None:
    assert load("pvc.yaml")["spec"]["accessModes"] == ["ReadWriteMany"]

