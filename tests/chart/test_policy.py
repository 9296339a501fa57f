"""Policy checks on the rendered chart: security, probes, resources, labels, wiring, env names."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from redrive.retrytopics import tier_label
from redrive.sealing import SealKeys
from redrive.signing import SigningKeys
from redrive.status import TOPIC_CONFIG
from retry_worker.settings import Settings as WorkerSettings
from tests.chart.chartlib import (
    CASES,
    CHART,
    CONTRACT_COMMON_ENV,
    CONTRACT_SIDECAR_ENV,
    CONTRACT_WORKER_ENV,
    IMAGES,
    KAFKA_SECURITY_ENV,
    KEY_ENV,
    NAMESPACE,
    OPTIONAL_ENV,
    POD_IDENTITY_ENV,
    RELEASE,
    REPO,
    SIDECAR_ADMIN_PORT,
    SIDECAR_ENV,
    SIDECAR_NAME,
    SIDECAR_PORT,
    WORKER_ADMIN_PORT,
    WORKER_ENV,
    all_containers,
    container,
    env_map,
    env_value,
    helm,
    long_running_containers,
    port_number,
    quantity_bytes,
    render,
)

ALL_CASES = list(CASES)
BACKEND = f"{RELEASE}-redrive-backend"
WORKER = f"{RELEASE}-redrive-retry-worker"
RECOMMENDED_LABELS = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                      "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                      "app.kubernetes.io/part-of")


CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration")


def backend_pod(case: str) -> dict[str, Any]:
    return render(case).get("Deployment", BACKEND)["spec"]["template"]["spec"]


def worker_pod(case: str) -> dict[str, Any]:
    return render(case).get("Deployment", WORKER)["spec"]["template"]["spec"]


def cases_with(kind: str, name: str) -> list[str]:
    return [c for c in ALL_CASES if render(c).find(kind, name) is not None]


# --- security ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_every_pod_and_container_runs_hardened(case: str) -> None:
    for obj, pod in render(case).pod_specs():
        where = f"{obj['kind']} {obj['metadata']['name']}"
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, where
        assert isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        # Only the self-certifying injector calls the API (to patch its caBundle).
        patches_ca_bundle = "REDRIVE_INJECTOR_WEBHOOK_CONFIGURATION" in str(pod)
        assert pod.get("automountServiceAccountToken") is patches_ca_bundle, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where
        for c in all_containers(pod):
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
            assert sc.get("runAsNonRoot") is True, (where, c["name"])
            assert sc.get("privileged") in (None, False), (where, c["name"])
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), (where, c["name"])
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", (where, c["name"])


@pytest.mark.parametrize("case", ALL_CASES)
def test_long_running_containers_get_a_writable_tmp_volume(case: str) -> None:
    for obj, pod in render(case).pod_specs():
        if obj["kind"] == "Pod":
            continue  # the helm test pod writes nothing
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in long_running_containers(pod):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, (obj["metadata"]["name"], c["name"])
            assert set(mounts.values()) <= volumes


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_container_requests_cpu_and_memory(case: str) -> None:
    for obj, pod in render(case).pod_specs():
        for c in all_containers(pod):
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), (obj["metadata"]["name"], c["name"])


@pytest.mark.parametrize("case", ALL_CASES)
def test_images_are_fully_qualified_contract_images_with_the_app_version(case: str) -> None:
    rendered = render(case)
    registry = (rendered.values["global"]["imageRegistry"] or rendered.values["imageRegistry"]
                or "ghcr.io")
    for _, pod in rendered.pod_specs():
        for c in all_containers(pod):
            ref, _, digest = c["image"].partition("@")
            repo, _, tag = ref.rpartition(":")
            host, _, path = repo.partition("/")
            assert host == registry and path.removeprefix("redrive/") in IMAGES, c["image"]
            assert tag == "0.1.0"
            assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
            assert c["imagePullPolicy"] == "IfNotPresent"


def test_a_digest_pins_the_image_and_global_pull_secrets_reach_every_pod() -> None:
    rendered = render("external-app")
    pod = worker_pod("external-app")
    assert pod["containers"][0]["image"] == (
        "registry.example.com/redrive/retry-worker:0.1.0@sha256:" + "0123456789abcdef" * 4)
    for _, pod in rendered.pod_specs():
        assert {"name": "registry-credentials"} in pod["imagePullSecrets"]
    assert pod["priorityClassName"] == "redrive-high"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert {"name": "extra-ca", "configMap": {"name": "shop-ca"}} in pod["volumes"]
    assert rendered.get("Deployment", WORKER)["spec"]["template"]["metadata"]["labels"][
        "team"] == "shop"
    assert pod["serviceAccountName"] == f"{RELEASE}-redrive"
    [account] = rendered.of_kind("ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:")
    assert env_map(container(pod, "retry-worker"))["REDRIVE_CONSOLE_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "redrive-console", "key": "token"}}


# --- probes --------------------------------------------------------------------------------

def assert_admin_probes(c: dict[str, Any], admin_port: int, port_name: str = "admin") -> None:
    assert port_number(c, port_name) == admin_port
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz",
                "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, admin_port), (c["name"], probe)


@pytest.mark.parametrize("case", cases_with("Deployment", BACKEND))
def test_the_sidecar_is_probed_on_its_admin_port(case: str) -> None:
    # Prefixed port names: names are unique across a pod, and apps use "http" themselves.
    assert_admin_probes(container(backend_pod(case), SIDECAR_NAME), SIDECAR_ADMIN_PORT,
                        "redrive-admin")


@pytest.mark.parametrize("case", cases_with("Deployment", WORKER))
def test_the_worker_is_probed_on_its_admin_port(case: str) -> None:
    assert_admin_probes(container(worker_pod(case), "retry-worker"), WORKER_ADMIN_PORT)


def test_the_demo_app_is_probed_by_tcp_so_its_faults_never_restart_it() -> None:
    app = container(backend_pod("default"), "backend")
    assert app["livenessProbe"]["tcpSocket"]["port"] == "app"
    assert "readinessProbe" not in app


# --- labels and selectors ------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_every_object_carries_the_recommended_labels(case: str) -> None:
    for doc in render(case).docs:
        labels = doc["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, (doc["kind"], doc["metadata"]["name"], missing)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("case", ALL_CASES)
def test_selectors_match_their_pods_and_services_reach_numeric_container_ports(case: str) -> None:
    rendered = render(case)
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in rendered.of_kind("Deployment")}
    for name, template in pods.items():
        selector = rendered.get("Deployment", name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        assert "helm.sh/chart" not in selector and "app.kubernetes.io/version" not in selector
    for svc in rendered.of_kind("Service"):
        matched = [t for t in pods.values()
                   if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(matched) == 1, svc["metadata"]["name"]
        # Numbers, never names: Kubernetes fills named ports of native sidecars (init
        # containers) into EndpointSlices only from 1.33 on.
        port_numbers = {p["containerPort"] for c in all_containers(matched[0]["spec"])
                        for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert isinstance(port["targetPort"], int), (svc["metadata"]["name"], port)
            assert port["targetPort"] in port_numbers, (svc["metadata"]["name"], port)
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        template = rendered.get("Deployment", pdb["metadata"]["name"])["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "maxUnavailable" in pdb["spec"], "minAvailable would block draining one replica"


# --- the sidecar wiring --------------------------------------------------------------------

@pytest.mark.parametrize("case", cases_with("Deployment", BACKEND))
def test_the_sidecar_is_native_on_1_29_and_later_unless_turned_off(case: str) -> None:
    rendered = render(case)
    pod = backend_pod(case)
    init = {c["name"]: c for c in pod.get("initContainers", [])}
    main = {c["name"]: c for c in pod["containers"]}
    native = (rendered.values["sidecar"]["nativeSidecar"]
              and tuple(map(int, rendered.case.kube_version.split(".")[:2])) >= (1, 29))
    if native:
        assert SIDECAR_NAME in init and SIDECAR_NAME not in main
        assert init[SIDECAR_NAME]["restartPolicy"] == "Always"
    else:
        assert SIDECAR_NAME in main and SIDECAR_NAME not in init
        assert "restartPolicy" not in main[SIDECAR_NAME]


def test_old_clusters_get_a_plain_sidecar_and_an_exec_pre_stop() -> None:
    pod = backend_pod("default-k8s-1.28")
    sidecar = container(pod, SIDECAR_NAME)
    assert sidecar in pod["containers"]
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert container(backend_pod("default"), SIDECAR_NAME)["lifecycle"]["preStop"]["sleep"]


@pytest.mark.parametrize("case", cases_with("Deployment", BACKEND))
def test_the_backend_service_targets_the_sidecar_and_the_sidecar_targets_the_app(case: str) -> None:
    rendered = render(case)
    pod = backend_pod(case)
    sidecar, app = container(pod, SIDECAR_NAME), container(pod, "backend")
    svc = rendered.get("Service", BACKEND)
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == [SIDECAR_PORT]
    assert port_number(sidecar, "redrive-http") == SIDECAR_PORT
    assert int(env_value(sidecar, "REDRIVE_LISTEN_PORT")) == SIDECAR_PORT
    assert int(env_value(sidecar, "REDRIVE_ADMIN_PORT")) == SIDECAR_ADMIN_PORT
    upstream = urlsplit(env_value(sidecar, "REDRIVE_UPSTREAM_URL"))
    assert upstream.hostname == "127.0.0.1"
    assert upstream.port == port_number(app, "app") == int(env_value(app, "PORT"))


@pytest.mark.parametrize("case", cases_with("Deployment", WORKER))
def test_the_workers_quarantine_is_a_volume_and_its_settings_parse(case: str) -> None:
    """The root filesystem is read-only: REDRIVE_QUARANTINE_DIR must be a mounted volume
    (not /tmp, whose emptyDir is small), and the worker accepts what the chart sets."""
    rendered = render(case)
    pod = rendered.get("Deployment", WORKER)["spec"]["template"]["spec"]
    worker = container(pod, "retry-worker")
    w = rendered.values["retryWorker"]
    path = env_value(worker, "REDRIVE_QUARANTINE_DIR")
    assert path == w["quarantine"]["path"] and not path.startswith("/tmp")
    mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == path)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"] == w["quarantine"]["sizeLimit"]
    assert int(env_value(worker, "REDRIVE_WORKER_BUFFER_BYTES")) == w["bufferBytes"]
    environ = {n: e["value"] for n, e in env_map(worker).items()
               if "value" in e and not n.startswith("REDRIVE_KAFKA_S")}
    settings = WorkerSettings.from_env(environ)
    assert str(settings.records.quarantine_dir) == path
    assert settings.consumer.buffer_bytes == w["bufferBytes"]


@pytest.mark.parametrize("case", cases_with("Deployment", BACKEND))
def test_the_spool_is_a_volume_and_its_cap_fits_inside_it(case: str) -> None:
    rendered = render(case)
    pod = backend_pod(case)
    sidecar = container(pod, SIDECAR_NAME)
    env = env_map(sidecar)
    spool = rendered.values["sidecar"]["spool"]
    if not spool["enabled"]:
        assert "REDRIVE_SPOOL_DIR" not in env and "REDRIVE_SPOOL_MAX_BYTES" not in env
        return
    path = env_value(sidecar, "REDRIVE_SPOOL_DIR")
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == path)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cap = int(env_value(sidecar, "REDRIVE_SPOOL_MAX_BYTES"))
    if spool["persistence"]["enabled"]:
        claim = rendered.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        size = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
        assert rendered.get("Deployment", BACKEND)["spec"]["strategy"]["type"] == "Recreate"
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
    assert 0 < cap <= size
    if not spool["maxBytes"]:
        assert cap == size * 9 // 10


@pytest.mark.parametrize("case", cases_with("Deployment", BACKEND))
def test_the_grace_period_outlasts_the_pre_stop_pause_and_the_drain(case: str) -> None:
    pod = backend_pod(case)
    sidecar = container(pod, SIDECAR_NAME)
    drain = int(env_value(sidecar, "REDRIVE_DRAIN_TIMEOUT_SECONDS"))
    pause = render(case).values["sidecar"]["preStopSleepSeconds"]
    # A native sidecar gets SIGTERM only once the app has exited: the app's own shutdown
    # comes first, inside the same grace period.
    app = render(case).values["sidecar"]["appShutdownSeconds"]
    assert pod["terminationGracePeriodSeconds"] > app + drain + pause


def test_the_spool_claim_for_your_own_apps_is_created_when_persistence_is_on() -> None:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               "--set", "backend.enabled=false", "--set", "retryWorker.targetUrl=http://x",
               "--set", "sidecar.spool.persistence.enabled=true")
    docs = [d for d in yaml.safe_load_all(out) if d]
    [claim] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == f"{RELEASE}-redrive-spool"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("case", cases_with("Deployment", WORKER))
def test_the_worker_replays_to_the_backend_service_and_outlasts_its_drain(case: str) -> None:
    rendered = render(case)
    pod = worker_pod(case)
    worker = container(pod, "retry-worker")
    target = urlsplit(env_value(worker, "REDRIVE_TARGET_URL"))
    custom = rendered.values["retryWorker"]["targetUrl"]
    if custom:
        assert env_value(worker, "REDRIVE_TARGET_URL") == custom
    else:
        svc = rendered.get("Service", BACKEND)
        assert target.hostname == f"{BACKEND}.{NAMESPACE}.svc"
        assert target.port == svc["spec"]["ports"][0]["port"]
    drain = int(env_value(worker, "REDRIVE_DRAIN_TIMEOUT_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > drain


# --- env names against the contract -------------------------------------------------------

def redrive_containers(case: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, pod in render(case).pod_specs():
        for c in all_containers(pod):
            if c["name"] == SIDECAR_NAME:
                out.append(("sidecar", c))
            elif c["name"] == "retry-worker":
                out.append(("worker", c))
    return out


@pytest.mark.parametrize("case", ALL_CASES)
def test_env_names_are_the_contract_names(case: str) -> None:
    rendered = render(case)
    extra = {e["name"] for part in ("sidecar", "retryWorker")
             for e in rendered.values[part]["extraEnv"]}
    for role, c in redrive_containers(case):
        allowed = SIDECAR_ENV if role == "sidecar" else WORKER_ENV
        names = set(env_map(c)) - extra
        unknown = {n for n in names if n.startswith("REDRIVE_")} - allowed
        assert not unknown, (role, sorted(unknown))
        assert names <= allowed | set(POD_IDENTITY_ENV), (role, sorted(names - allowed))
        for name, field in POD_IDENTITY_ENV.items():
            assert env_map(c)[name]["valueFrom"]["fieldRef"]["fieldPath"] == field
        for name, entry in env_map(c).items():
            assert "value" in entry or "valueFrom" in entry, name


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_contract_variable_the_chart_manages_is_set(case: str) -> None:
    for role, c in redrive_containers(case):
        expected = ((SIDECAR_ENV if role == "sidecar" else WORKER_ENV) - KEY_ENV
                    - KAFKA_SECURITY_ENV - OPTIONAL_ENV)
        if role == "sidecar" and not render(case).values["sidecar"]["spool"]["enabled"]:
            expected -= {"REDRIVE_SPOOL_DIR", "REDRIVE_SPOOL_MAX_BYTES"}
        missing = expected - set(env_map(c))
        assert not missing, (role, sorted(missing))


@pytest.mark.parametrize("case", ALL_CASES)
def test_signing_and_seal_keys_are_wired_only_when_enabled(case: str) -> None:
    rendered = render(case)
    keys = rendered.values["keys"]
    secret = keys["existingSecret"] or f"{RELEASE}-redrive-keys"
    for _, c in redrive_containers(case):
        env = env_map(c)
        for name, enabled, key in (("REDRIVE_SIGNING_KEY", keys["signing"], keys["signingKeyName"]),
                                   ("REDRIVE_SEAL_KEY", keys["seal"], keys["sealKeyName"])):
            if not enabled:
                assert name not in env
                continue
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (secret, key)
    generated = rendered.find("Secret", f"{RELEASE}-redrive-keys")
    wants_generated = (keys["signing"] or keys["seal"]) and not keys["existingSecret"]
    assert (generated is not None) == bool(wants_generated)
    if generated:
        assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_generated_keys_are_in_the_format_the_services_parse() -> None:
    rendered = render("generated-keys")
    keys = rendered.values["keys"]
    secret = rendered.find("Secret", f"{RELEASE}-redrive-keys")
    assert secret is not None
    signing = base64.b64decode(secret["data"][keys["signingKeyName"]]).decode()
    seal = base64.b64decode(secret["data"][keys["sealKeyName"]]).decode()
    assert SigningKeys.parse(signing).kids == ("k1",)
    assert SealKeys.parse(seal).kids == ("k1",)
    assert signing != seal


def test_the_defaults_leave_signing_and_sealing_off() -> None:
    for _, c in redrive_containers("default"):
        assert not KEY_ENV & set(env_map(c))


# --- Kafka ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_both_services_use_the_same_kafka_and_topics(case: str) -> None:
    rendered = render(case)
    seen = {(env_value(c, "REDRIVE_KAFKA_BOOTSTRAP_SERVERS"), env_value(c, "REDRIVE_TOPIC"),
             env_value(c, "REDRIVE_DLQ_TOPIC")) for _, c in redrive_containers(case)}
    if not seen:
        return  # only the injector: its sidecars are in tests/injector
    assert len(seen) == 1
    bootstrap, topic, dlq = seen.pop()
    assert topic != dlq
    kafkas = rendered.of_kind("Kafka")
    if not rendered.values["kafka"]["strimzi"]["enabled"]:
        assert not kafkas and not rendered.of_kind("KafkaTopic")
        assert bootstrap == rendered.values["kafka"]["bootstrapServers"]
        return
    [kafka] = kafkas
    cluster = kafka["metadata"]["name"]
    # The one listener is the one the services bootstrap from: 9092 in plain text, or
    # 9093 with TLS (kafka.strimzi.tls).
    [listener] = kafka["spec"]["kafka"]["listeners"]
    tls = bool(rendered.values["kafka"]["strimzi"]["tls"])
    assert (listener["port"], listener["tls"]) == ((9093, True) if tls else (9092, False))
    assert bootstrap == f"{cluster}-kafka-bootstrap.{NAMESPACE}.svc:{listener['port']}"
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1"
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    [pool] = rendered.of_kind("KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["storage"]["type"] == "ephemeral"
    topics = {t["spec"]["topicName"]: t for t in rendered.of_kind("KafkaTopic")}
    [worker] = [c for role, c in redrive_containers(case) if role == "worker"]
    retry = env_value(worker, "REDRIVE_RETRY_TOPIC")
    assert retry == f"{topic}.retry"
    status = env_value(worker, "REDRIVE_STATUS_TOPIC")
    assert status == f"{topic}.status"
    # The tier topics: compared with the worker's own computation in test_retry_tiers.py.
    tiers = {t for t in topics if t.startswith(f"{retry}.")}
    cap = rendered.values["retryWorker"]["backoff"]["maxSeconds"]
    assert f"{retry}.{tier_label(cap)}" in tiers
    assert set(topics) == {topic, dlq, retry, status} | tiers
    for _, sidecar in (rc for rc in redrive_containers(case) if rc[0] == "sidecar"):
        assert env_value(sidecar, "REDRIVE_STATUS_TOPIC") == status
    rf = rendered.values["kafka"]["strimzi"]["replicationFactor"]
    min_isr = 2 if rf >= 3 else 1
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == min_isr
    max_record = int(env_value(worker, "REDRIVE_MAX_RECORD_BYTES"))
    for t in topics.values():
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        # An uninstall must not make the Topic Operator delete the records (the DLQ above all).
        assert t["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert t["spec"]["config"]["min.insync.replicas"] == min_isr
        assert t["spec"]["config"]["max.message.bytes"] > max_record
    # The status topic's configuration is the one the services document and expect.
    assert {k: str(v) for k, v in topics[status]["spec"]["config"].items()
            if k in TOPIC_CONFIG} == TOPIC_CONFIG


def test_min_insync_replicas_follows_the_replication_factor() -> None:
    out = helm("template", "x", str(CHART), "--api-versions", "kafka.strimzi.io/v1",
               "--set", "kafka.strimzi.enabled=true", "--set", "kafka.strimzi.replicas=3",
               "--set", "kafka.strimzi.replicationFactor=3")
    docs = [d for d in yaml.safe_load_all(out) if d]
    [kafka] = [d for d in docs if d["kind"] == "Kafka"]
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    for topic in (d for d in docs if d["kind"] == "KafkaTopic"):
        assert topic["spec"]["config"]["min.insync.replicas"] == 2


# --- optional extras -----------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_monitors_need_both_the_value_and_the_api(case: str) -> None:
    rendered = render(case)
    api = "monitoring.coreos.com/v1" in rendered.case.api_versions
    for kind, key in (("ServiceMonitor", "serviceMonitor"), ("PodMonitor", "podMonitor")):
        wanted = rendered.values["monitoring"][key]["enabled"] and api
        assert bool(rendered.of_kind(kind)) == wanted, kind


def test_the_service_monitor_scrapes_both_admin_services() -> None:
    rendered = render("monitoring")
    [monitor] = rendered.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in rendered.of_kind("Service")
               if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in scraped} == {f"{BACKEND}-admin", WORKER}
    for svc in scraped:
        assert [p["name"] for p in svc["spec"]["ports"]] == ["admin"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [pod_monitor] = rendered.of_kind("PodMonitor")
    # Injected sidecars, by port number (named ports of init containers are not reliable).
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == SIDECAR_ADMIN_PORT
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"redrive.io/sidecar": "true"}


@pytest.mark.parametrize("case", ALL_CASES)
def test_network_policies_name_ports_by_number(case: str) -> None:
    for policy in render(case).of_kind("NetworkPolicy"):
        for direction in ("ingress", "egress"):
            for rule in policy["spec"].get(direction, []):
                for port in rule.get("ports", []):
                    assert isinstance(port["port"], int), (policy["metadata"]["name"], port)


@pytest.mark.parametrize("case", ["monitoring", "kind"])
def test_no_pod_is_scraped_twice(case: str) -> None:
    """Each pod is reached by at most one monitor: the ServiceMonitor through its admin
    Service, or the PodMonitor (injected pods only); every sum in the alerts counts once."""
    rendered = render(case)
    services = [s for m in rendered.of_kind("ServiceMonitor")
                for s in rendered.of_kind("Service")
                if m["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    for obj, _ in rendered.pod_specs():
        if obj["kind"] != "Deployment":
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        paths = [s["metadata"]["name"] for s in services
                 if s["spec"]["selector"].items() <= labels.items()]
        paths += [m["metadata"]["name"] for m in rendered.of_kind("PodMonitor")
                  if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(paths) <= 1, (obj["metadata"]["name"], paths)


def test_the_autoscaler_scales_the_worker_which_then_has_no_fixed_replicas() -> None:
    rendered = render("autoscaling")
    [hpa] = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": WORKER}
    assert "replicas" not in rendered.get("Deployment", WORKER)["spec"]
    assert not render("default").of_kind("HorizontalPodAutoscaler")


def test_network_policies_open_only_the_proxy_and_admin_ports() -> None:
    rendered = render("networkpolicy")
    backend = rendered.get("NetworkPolicy", BACKEND)
    ports = [p["port"] for rule in backend["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [SIDECAR_PORT, SIDECAR_ADMIN_PORT]
    assert all("from" in rule for rule in backend["spec"]["ingress"])
    worker = rendered.get("NetworkPolicy", WORKER)
    egress_ports = {p["port"] for rule in worker["spec"]["egress"] for p in rule["ports"]}
    assert {53, 9092, 9093, SIDECAR_PORT} <= egress_ports
    # The status API and console: sidecars only (through their well-known path), plus any
    # consolePeers; people port-forward or use the opt-in Ingress.
    [status_rule] = [r for r in worker["spec"]["ingress"]
                     if [p["port"] for p in r["ports"]] == [9080]]
    assert status_rule["from"][1]["podSelector"]["matchLabels"] == {"redrive.io/sidecar": "true"}
    assert not render("default").of_kind("NetworkPolicy")


def test_the_helm_test_pod_checks_the_service_and_the_admin_endpoints() -> None:
    [pod] = render("default").of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = pod["spec"]["containers"][0]["command"][3:]
    assert urls == [f"http://{BACKEND}:80/api/health", f"http://{BACKEND}-admin:9901/readyz",
                    f"http://{WORKER}:9902/readyz"]


def test_contract_copy_matches_shared_contract_md() -> None:
    # Beside the clone, or beside the folder of worktrees (/work/wt/<branch>).
    candidates = [REPO.parent / "shared" / "CONTRACT.md",
                  REPO.parent.parent / "shared" / "CONTRACT.md"]
    contract = next((c for c in candidates if c.is_file()), candidates[0])
    if not contract.is_file():
        pytest.skip(f"{contract} is not beside this clone; the copy in chartlib.py stands")
    found: dict[str, set[str]] = {}
    heading = ""
    for line in contract.read_text().splitlines():
        if line in ("Common:", "Sidecar:", "Retry worker:"):
            heading = line.rstrip(":")
        elif line.startswith("## "):
            heading = ""
        elif heading and (m := re.match(r"^\| `(REDRIVE_[A-Z_]+)` \|", line)):
            found.setdefault(heading, set()).add(m[1])
    assert found == {"Common": CONTRACT_COMMON_ENV, "Sidecar": CONTRACT_SIDECAR_ENV,
                     "Retry worker": CONTRACT_WORKER_ENV}
