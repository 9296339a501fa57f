"""In-cluster end-to-end test: capture, replay and dead-lettering on a live cluster, and an
unmodified third-party Deployment protected by the injector through one label.

Opt-in (marker ``e2e``, deselected by default). It expects the chart deployed the way
``skaffold run`` deploys it on kind (Strimzi Kafka, the demo backend behind its sidecar,
the retry worker with the short backoffs of ``charts/redrive/ci/kind-values.yaml``):

    kind create cluster --config kind-config.yaml
    skaffold run                                   # the kind profile activates itself
    .venv/bin/pytest -m e2e tests/e2e

Everything goes through the Kubernetes API server (its pod and service proxies, and exec),
so no port-forward or node port is needed and the test runs from anywhere with a
kubeconfig. With no reachable cluster every test is skipped with the reason.

    REDRIVE_E2E_NAMESPACE   namespace of the release (default: redrive)
    REDRIVE_E2E_RELEASE     release name (default: redrive)
    REDRIVE_E2E_CONTEXT     kubeconfig context (default: the current one)
    REDRIVE_E2E_REQUIRE     set to 1 in CI: no cluster is then a failure, not a skip
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the e2e test needs the kubernetes client")
from kubernetes import client, config  # noqa: E402
from kubernetes.stream import stream  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

NAMESPACE = os.environ.get("REDRIVE_E2E_NAMESPACE", "redrive")
RELEASE = os.environ.get("REDRIVE_E2E_RELEASE", "redrive")
CONTEXT = os.environ.get("REDRIVE_E2E_CONTEXT") or None
REQUIRE = os.environ.get("REDRIVE_E2E_REQUIRE", "") not in ("", "0")
FULLNAME = RELEASE if "redrive" in RELEASE else f"{RELEASE}-redrive"
BACKEND, WORKER = f"{FULLNAME}-backend", f"{FULLNAME}-retry-worker"
INJECTOR = f"{FULLNAME}-injector"
# An off-the-shelf image, used as it is: httpbin answers /status/<code> with that code.
THIRD_PARTY_IMAGE = os.environ.get("REDRIVE_E2E_THIRD_PARTY_IMAGE",
                                   "docker.io/kennethreitz/httpbin:latest")
BACKEND_PORT, SIDECAR_ADMIN_PORT, WORKER_ADMIN_PORT = 3000, 9901, 9902

FAIL = {"mode": "status", "status": 503}
RECOVER = {"mode": "none"}

T = TypeVar("T")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Cluster:
    """Thin helpers over the kubernetes client for this test."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def proxy(self, method: str, target: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> Response:
        """A request through the API server's proxy to ``pods/<name>:<port>`` or
        ``services/<name>:<port name>``; any status comes back (no exception)."""
        header_params = {"Accept": "*/*", **(headers or {})}
        if body is not None:
            header_params["Content-Type"] = "application/json"
        resource = f"/api/v1/namespaces/{NAMESPACE}/{target}/proxy/{path.lstrip('/')}"
        method, url, hdrs, data, _ = self.api.param_serialize(
            method, resource, header_params=header_params, body=body,
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=hdrs, body=data,
                                 _request_timeout=30)
        return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                        resp.read())

    def pods(self, component: str) -> list[str]:
        selector = (f"app.kubernetes.io/instance={RELEASE},"
                    f"app.kubernetes.io/component={component}")
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        return [p.metadata.name for p in pods
                if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]

    def set_fault(self, spec: dict[str, Any]) -> None:
        """Set the fault on every backend pod, on the app's own port (not via the sidecar)."""
        for pod in self.pods("backend"):
            resp = self.proxy("PUT", f"pods/{pod}:{BACKEND_PORT}", "_faults", body=spec)
            assert resp.status == 200, (pod, resp.status, resp.body[:300])

    def metric(self, component: str, port: int, name: str,
               labels: dict[str, str] | None = None) -> float:
        """Sum of one counter's samples over the component's pods (admin /metrics)."""
        total = 0.0
        for pod in self.pods(component):
            resp = self.proxy("GET", f"pods/{pod}:{port}", "metrics")
            assert resp.status == 200, (pod, resp.status)
            for family in text_string_to_metric_families(resp.body.decode()):
                for sample in family.samples:
                    if sample.name == name and (labels or {}).items() <= sample.labels.items():
                        total += sample.value
        return total


def wait_for(what: str, check: Callable[[], T | None], timeout: float,
             interval: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" +
                (f" (last: {last})" if last else ""))


def skip_or_fail(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (REDRIVE_E2E_REQUIRE is set)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        config.load_kube_config(context=CONTEXT)
        api = client.ApiClient()
        client.CoreV1Api(api).list_namespace(limit=1, _request_timeout=5)
    except Exception as exc:  # any failure here means "no cluster to test"
        skip_or_fail(f"no Kubernetes cluster reachable ({type(exc).__name__}: {exc}); create "
                     "one with `kind create cluster --config kind-config.yaml` and deploy "
                     "with `skaffold run`")
    try:
        client.CoreV1Api(api).read_namespace(NAMESPACE)
    except client.ApiException as exc:
        skip_or_fail(f"namespace {NAMESPACE!r} not found ({exc.status}): deploy Redrive "
                     "first (`skaffold run`) or set REDRIVE_E2E_NAMESPACE")
    yield Cluster(api)
    api.close()


def rolled_out(c: Cluster, name: str) -> bool:
    d = c.apps.read_namespaced_deployment(name, NAMESPACE)
    s = d.status
    want = d.spec.replicas or 0
    return bool(s.observed_generation and s.observed_generation >= d.metadata.generation
                and (s.updated_replicas or 0) == want and (s.available_replicas or 0) == want
                and (s.replicas or 0) == want)


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Cluster:
    try:
        kafkas = cluster.custom.list_namespaced_custom_object(
            "kafka.strimzi.io", "v1", NAMESPACE, "kafkas").get("items", [])
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        kafkas = []  # no Strimzi here: the release uses an existing Kafka
    for kafka in kafkas:
        name = kafka["metadata"]["name"]

        def ready(name: str = name) -> bool:
            obj = cluster.custom.get_namespaced_custom_object(
                "kafka.strimzi.io", "v1", NAMESPACE, "kafkas", name)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in obj.get("status", {}).get("conditions", []))

        wait_for(f"Kafka {name} to be Ready", ready, timeout=600, interval=5)
    for name in (BACKEND, WORKER):
        wait_for(f"deployment {name} to roll out", lambda n=name: rolled_out(cluster, n),
                 timeout=600, interval=5)
    cluster.set_fault(RECOVER)
    return cluster


@pytest.fixture
def recover_afterwards(deployed: Cluster) -> Iterator[Cluster]:
    yield deployed
    deployed.set_fault(RECOVER)


def post_user(c: Cluster, name: str) -> Response:
    return c.proxy("POST", f"services/{BACKEND}:http", "api/users",
                   body={"name": name, "email": f"{name}@example.com"})


def assert_captured(resp: Response) -> str:
    """The sidecar's reject-mode answer: 503, Retry-After, X-Redrive-Id, queued: true."""
    assert resp.status == 503, (resp.status, resp.body[:300])
    assert "retry-after" in resp.headers
    capture_id = resp.headers["x-redrive-id"]
    body = resp.json()
    assert body["id"] == capture_id
    assert body["queued"] is True, body
    return capture_id


def test_the_release_rolls_out_and_answers_through_the_sidecar(deployed: Cluster) -> None:
    resp = deployed.proxy("GET", f"services/{BACKEND}:http", "api/health")
    assert resp.status == 200, resp.body[:300]
    for pod in deployed.pods("backend"):
        assert deployed.proxy("GET", f"pods/{pod}:{SIDECAR_ADMIN_PORT}", "readyz").status == 200
    for pod in deployed.pods("retry-worker"):
        assert deployed.proxy("GET", f"pods/{pod}:{WORKER_ADMIN_PORT}", "readyz").status == 200


def test_failed_requests_are_captured_and_replayed_once_the_backend_recovers(
        recover_afterwards: Cluster) -> None:
    c = recover_afterwards
    published_before = c.metric("backend", SIDECAR_ADMIN_PORT,
                                "redrive_sidecar_captures_total", {"result": "published"})
    names = [f"e2e-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    c.set_fault(FAIL)
    ids = [assert_captured(post_user(c, name)) for name in names]
    assert len(set(ids)) == len(ids)
    published = c.metric("backend", SIDECAR_ADMIN_PORT,
                         "redrive_sidecar_captures_total", {"result": "published"})
    assert published - published_before >= len(names), "captures were not published to Kafka"

    c.set_fault(RECOVER)

    def replayed() -> list[str] | None:
        resp = c.proxy("GET", f"services/{BACKEND}:http", "api/users")
        assert resp.status == 200, resp.status
        seen = [u["name"] for u in resp.json()["users"]]
        missing = [n for n in names if n not in seen]
        assert not missing, f"not replayed yet: {missing}"
        return seen

    seen = wait_for("the worker to replay every captured POST", replayed, timeout=180)
    # Idempotency-Key makes each replay create the user once, however often it ran.
    assert all(seen.count(n) == 1 for n in names), seen


def test_requests_that_keep_failing_are_dead_lettered(recover_afterwards: Cluster) -> None:
    c = recover_afterwards
    dead_before = c.metric("retry-worker", WORKER_ADMIN_PORT,
                           "redrive_retry_worker_dead_letters_total")
    names = [f"e2e-dlq-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    c.set_fault(FAIL)  # and leave it on: every replay fails until attempts run out
    ids = [assert_captured(post_user(c, name)) for name in names]

    def dead_lettered() -> float | None:
        now = c.metric("retry-worker", WORKER_ADMIN_PORT,
                       "redrive_retry_worker_dead_letters_total")
        assert now - dead_before >= len(ids), f"dead letters so far: {now - dead_before}"
        return now

    wait_for("the worker to dead-letter the records", dead_lettered, timeout=240)

    # The operator CLI in the worker image finds them on the dead-letter topic.
    [worker, *_] = c.pods("retry-worker")
    out = stream(c.core.connect_get_namespaced_pod_exec, worker, NAMESPACE,
                 container="retry-worker", command=["redrive", "dlq", "list"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    for capture_id in ids:
        assert capture_id in out, f"{capture_id} not in `redrive dlq list`:\n{out[:2000]}"


@pytest.fixture
def labelled_namespace(deployed: Cluster) -> Iterator[str]:
    """A namespace labelled redrive.io/inject=enabled; deleted afterwards."""
    name = f"redrive-e2e-{uuid.uuid4().hex[:8]}"
    deployed.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"redrive.io/inject": "enabled"})))
    try:
        yield name
    finally:
        deployed.core.delete_namespace(name)


def test_an_unmodified_third_party_deployment_is_protected_by_the_label_alone(
        deployed: Cluster, labelled_namespace: str) -> None:
    """httpbin as anyone would deploy it (its own port 80, a Service on port 80) in a
    namespace labelled redrive.io/inject=enabled: the injector adds the sidecar, and with
    kind-values' iptables interception the unchanged Service reaches it."""
    c, ns = deployed, labelled_namespace
    wait_for("the injector to roll out", lambda: rolled_out(c, INJECTOR), timeout=300,
             interval=5)
    labels = {"app": "httpbin"}
    c.apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="httpbin"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="httpbin", image=THIRD_PARTY_IMAGE,
                    ports=[client.V1ContainerPort(container_port=80)])])))))
    c.core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="httpbin"),
        spec=client.V1ServiceSpec(selector=labels, ports=[client.V1ServicePort(
            name="http", port=80, target_port=80)])))

    def ready_pod() -> Any:
        pods = c.core.list_namespaced_pod(ns, label_selector="app=httpbin").items
        ready = [p for p in pods if any(cond.type == "Ready" and cond.status == "True"
                                        for cond in p.status.conditions or [])]
        return ready[0] if ready else None

    pod = wait_for("the injected httpbin pod to be ready", ready_pod, timeout=300, interval=5)
    assert pod.metadata.annotations["redrive.io/status"] == "injected"
    assert pod.metadata.labels["redrive.io/sidecar"] == "true"
    init = [ct.name for ct in pod.spec.init_containers or []]
    assert init[:2] == ["redrive-intercept", "redrive-sidecar"]
    assert [ct.name for ct in pod.spec.containers] == ["httpbin"], "the app is untouched"

    def through_service(method: str, path: str) -> Response:
        resource = f"/api/v1/namespaces/{ns}/services/httpbin:80/proxy/{path.lstrip('/')}"
        m, url, hdrs, data, _ = c.api.param_serialize(
            method, resource, header_params={"Accept": "*/*",
                                             "Content-Type": "application/json"},
            body={"order": 1} if method == "POST" else None, auth_settings=["BearerToken"])
        resp = c.api.call_api(m, url, header_params=hdrs, body=data, _request_timeout=30)
        return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                        resp.read())

    assert through_service("GET", "get").status == 200
    # A failure through the unchanged Service is captured by the sidecar.
    assert_captured(through_service("POST", "status/503"))
