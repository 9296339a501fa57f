"""AdmissionReview golden tests: what the injector does to a pod, applied as the API server
would (the JSONPatch through ``jsonpatch``) and validated against every supported
Kubernetes minor."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from injector.mutate import INTERCEPT_NAME, review
from injector.template import SIDECAR_NAME, Template, default_template_text
from sidecar.settings import Settings as SidecarSettings
from tests.chart.chartlib import CHART, SUPPORTED_KUBE_VERSIONS, env_map, helm, validate_k8s
from tests.injector.support import (
    INJECTOR_NAMESPACE,
    admission_request,
    chart_docs,
    chart_template,
    chart_template_text,
    deployment_pod,
)

PER_POD_ENV = {"REDRIVE_TOPIC", "REDRIVE_DLQ_TOPIC", "REDRIVE_STATUS_TOPIC",
               "REDRIVE_UPSTREAM_URL", "REDRIVE_CAPTURE_EXCLUDE_PATHS", "REDRIVE_STATUS_URL"}


def inject(pod: dict[str, Any], namespace: str = "shop",
           template: Template | None = None) -> tuple[dict[str, Any], Any]:
    decision = review(admission_request(pod, namespace), template or chart_template(),
                      INJECTOR_NAMESPACE)
    patched = jsonpatch.apply_patch(pod, decision.patch) if decision.patch else pod
    return patched, decision


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [c for c in spec.get("initContainers", []) + spec["containers"]
            if c["name"] == SIDECAR_NAME]


def test_a_plain_deployments_pod_gets_exactly_one_native_sidecar() -> None:
    pod = deployment_pod()
    patched, decision = inject(pod)
    assert decision.allowed and decision.outcome == "injected"
    [sidecar] = sidecars(patched)
    assert patched["spec"]["initContainers"] == [sidecar]
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in patched["spec"]["containers"]] == ["web"]
    assert patched["spec"]["containers"] == pod["spec"]["containers"], "the app is untouched"
    assert patched["metadata"]["labels"]["redrive.io/sidecar"] == "true"
    assert patched["metadata"]["annotations"]["redrive.io/status"] == "injected"
    env = {k: v.get("value") for k, v in env_map(sidecar).items()}
    assert env["REDRIVE_UPSTREAM_URL"] == "http://127.0.0.1:80"
    # Isolation: the service's own topic, the one a release named "web" in "shop" consumes.
    assert env["REDRIVE_TOPIC"] == "redrive.shop.web"
    assert env["REDRIVE_DLQ_TOPIC"] == "redrive.shop.web.dlq"
    # `queued` states go where that release's worker reads them.
    assert env["REDRIVE_STATUS_TOPIC"] == "redrive.shop.web.status"
    assert env["REDRIVE_STATUS_URL"] == "http://web-redrive-retry-worker-status.shop.svc:9080"
    # Kubelet probes never become captures.
    assert env["REDRIVE_CAPTURE_EXCLUDE_PATHS"] == "/healthz"
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert set(volumes) == {"redrive-tmp", "redrive-spool"}
    assert "emptyDir" in volumes["redrive-spool"]
    # The spool, and the quarantine the sidecar keeps under it, are on that volume.
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts[env["REDRIVE_SPOOL_DIR"]] == "redrive-spool"
    # The app's default 30 s, then the sidecar's pause (5), drain (20) and flush (10).
    assert patched["spec"]["terminationGracePeriodSeconds"] == 30 + 5 + 20 + 10
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert sidecar["resources"]["requests"]


@pytest.mark.parametrize("version", SUPPORTED_KUBE_VERSIONS)
def test_the_patched_pod_is_valid_on_every_supported_minor(version: str) -> None:
    pod = deployment_pod(annotations={"redrive.io/intercept": "iptables"})
    patched, _ = inject(pod, template=chart_template(version))
    patched["metadata"]["name"] = "web-7d4b9c8f6d-x2x9z"
    validate_k8s(patched, version)


def test_a_second_pass_is_a_no_op() -> None:
    patched, _ = inject(deployment_pod())
    again, decision = inject(patched)
    assert decision.allowed and decision.outcome == "skipped" and not decision.patch
    assert again == patched
    assert len(sidecars(again)) == 1


@pytest.mark.parametrize(("namespace", "pod", "why"), [
    ("shop", deployment_pod(labels={"redrive.io/inject": "disabled"}), "opts out"),
    ("kube-system", deployment_pod(), "kube-system"),
    (INJECTOR_NAMESPACE, deployment_pod(), "own namespace"),
    ("shop", {**deployment_pod(), "spec": {**deployment_pod()["spec"], "hostNetwork": True}},
     "host-network"),
], ids=["opted-out", "kube-system", "own-namespace", "host-network"])
def test_pods_that_must_not_be_injected_are_untouched(namespace: str, pod: dict[str, Any],
                                                      why: str) -> None:
    before = copy.deepcopy(pod)
    patched, decision = inject(pod, namespace)
    assert decision.allowed and decision.outcome == "skipped" and not decision.patch
    assert why in decision.reason
    assert patched == before


@pytest.mark.parametrize(("annotations", "names"), [
    ({"redrive.io/upstream-port": "http"}, ["redrive.io/upstream-port"]),
    ({"redrive.io/upstream-port": "8080"}, ["redrive.io/upstream-port"]),
    ({"redrive.io/intercept": "ebpf"}, ["redrive.io/intercept"]),
    ({"redrive.io/capture-statuses": "502,oops"}, ["redrive.io/capture-statuses"]),
    ({"redrive.io/failure-response": "drop", "redrive.io/topic": "bad/topic"},
     ["redrive.io/failure-response", "redrive.io/topic"]),
])
def test_bad_annotations_are_refused_with_a_message_naming_them(annotations: dict[str, str],
                                                                names: list[str]) -> None:
    pod = deployment_pod(annotations=annotations)
    _, decision = inject(pod)
    assert not decision.allowed and decision.outcome == "refused" and not decision.patch
    for name in names:
        assert name in decision.reason
        assert f"{name}: {annotations[name]!r} is invalid; it accepts" in decision.reason


def test_the_messages_say_what_each_annotation_accepts() -> None:
    _, decision = inject(deployment_pod(annotations={"redrive.io/intercept": "ebpf"}))
    assert decision.reason.endswith("redrive.io/intercept: 'ebpf' is invalid; it accepts "
                                    "none or iptables")
    _, decision = inject(deployment_pod(port=None))
    assert "redrive.io/upstream-port: the pod declares no containerPort" in decision.reason


def test_annotations_tune_the_sidecar() -> None:
    pod = deployment_pod(annotations={
        "redrive.io/upstream-port": "3000", "redrive.io/capture-statuses": "500, 503",
        "redrive.io/failure-response": "accept", "redrive.io/topic": "orders.failed"})
    patched, _ = inject(pod)
    env = {k: v.get("value") for k, v in env_map(sidecars(patched)[0]).items()}
    assert env["REDRIVE_UPSTREAM_URL"] == "http://127.0.0.1:3000"
    assert env["REDRIVE_CAPTURE_STATUSES"] == "500,503"
    assert env["REDRIVE_FAILURE_RESPONSE"] == "accept"
    assert (env["REDRIVE_TOPIC"], env["REDRIVE_DLQ_TOPIC"], env["REDRIVE_STATUS_TOPIC"]) == \
        ("orders.failed", "orders.failed.dlq", "orders.failed.status")


def test_iptables_interception_adds_a_net_admin_init_container_before_the_sidecar() -> None:
    pod = deployment_pod(annotations={"redrive.io/intercept": "iptables"})
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox"}]
    patched, _ = inject(pod)
    names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert names == [INTERCEPT_NAME, SIDECAR_NAME, "migrate"]
    intercept = patched["spec"]["initContainers"][0]
    assert intercept["command"] == ["redrive-intercept", "--ports", "80", "--to-port", "8080"]
    assert "restartPolicy" not in intercept, "it runs to completion before the sidecar starts"
    sc = intercept["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc["allowPrivilegeEscalation"] is False
    without, _ = inject(deployment_pod())
    assert INTERCEPT_NAME not in [c["name"] for c in without["spec"]["initContainers"]]


def test_an_old_cluster_gets_a_classic_sidecar_container() -> None:
    patched, _ = inject(deployment_pod(), template=chart_template("1.28.0"))
    assert "initContainers" not in patched["spec"]
    assert [c["name"] for c in patched["spec"]["containers"]] == ["web", SIDECAR_NAME]
    assert "restartPolicy" not in patched["spec"]["containers"][1]


def test_a_pods_own_grace_period_comes_first() -> None:
    pod = deployment_pod()
    pod["spec"]["terminationGracePeriodSeconds"] = 60
    patched, _ = inject(pod)
    assert patched["spec"]["terminationGracePeriodSeconds"] == 60 + 5 + 20 + 10


def test_two_services_get_their_own_topics() -> None:
    a, _ = inject(deployment_pod("orders"))
    b, _ = inject(deployment_pod("payments"))
    topics = {env_map(sidecars(p)[0])["REDRIVE_TOPIC"]["value"] for p in (a, b)}
    assert topics == {"redrive.shop.orders", "redrive.shop.payments"}


# --- one source of truth -----------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.28.0", "1.33.0"])
def test_the_injected_sidecar_is_the_charts_sidecar(version: str) -> None:
    """The chart's demo backend and an injected pod get the same container, apart from
    what is per pod (topic, upstream, status URL, excluded probe paths)."""
    docs = chart_docs(version)
    [backend] = [d for d in docs if d["kind"] == "Deployment"
                 and d["metadata"]["name"] == "redrive-backend"]
    spec = backend["spec"]["template"]["spec"]
    [charts] = [c for c in spec.get("initContainers", []) + spec["containers"]
                if c["name"] == SIDECAR_NAME]
    patched, _ = inject(deployment_pod(), template=chart_template(version))
    [injected] = sidecars(patched)

    def strip(c: dict[str, Any]) -> dict[str, Any]:
        c = copy.deepcopy(c)
        c["env"] = [e for e in c["env"] if e["name"] not in PER_POD_ENV]
        return c

    assert strip(injected) == strip(charts)


def test_the_packaged_default_template_is_the_charts() -> None:
    assert json.loads(default_template_text()) == json.loads(chart_template_text()), (
        "injector/src/injector/default-template.json is out of date: "
        "run scripts/injector-template.py")
    assert Template.parse(default_template_text()).native is True


def test_a_cluster_wide_default_intercept_needs_no_annotation_and_an_annotation_wins() -> None:
    template = chart_template()
    decision = review(admission_request(deployment_pod()), template, INJECTOR_NAMESPACE,
                      default_intercept="iptables")
    patched = jsonpatch.apply_patch(deployment_pod(), decision.patch)
    assert patched["spec"]["initContainers"][0]["name"] == INTERCEPT_NAME
    opted = deployment_pod(annotations={"redrive.io/intercept": "none"})
    decision = review(admission_request(opted), template, INJECTOR_NAMESPACE,
                      default_intercept="iptables")
    patched = jsonpatch.apply_patch(opted, decision.patch)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [SIDECAR_NAME]


def test_an_injector_only_release_still_points_sidecars_at_their_own_worker() -> None:
    template = chart_template("1.33.0", "retryWorker.enabled=false", "backend.enabled=false")
    patched, _ = inject(deployment_pod("orders"), template=template)
    env = env_map(sidecars(patched)[0])
    assert env["REDRIVE_STATUS_URL"]["value"] == \
        "http://orders-redrive-retry-worker-status.shop.svc:9080"


def test_the_charts_pod_monitor_scrapes_injected_pods_on_a_declared_port() -> None:
    # Monitors need the monitoring.coreos.com/v1 API announced to helm template.
    out = helm("template", "redrive", str(CHART), "--namespace", INJECTOR_NAMESPACE,
               "--api-versions", "monitoring.coreos.com/v1", "--set", "injector.enabled=true",
               "--set", "monitoring.podMonitor.enabled=true",
               "--set", "monitoring.serviceMonitor.enabled=true")
    docs = tuple(d for d in yaml.safe_load_all(out) if d)
    [pod_monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    [service_monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    patched, _ = inject(deployment_pod())
    labels = patched["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    port = pod_monitor["spec"]["podMetricsEndpoints"][0]["portNumber"]
    declared = {p["containerPort"] for c in sidecars(patched) for p in c["ports"]}
    assert port in declared
    # The ServiceMonitor selects Services by the release's labels, which an injected pod's
    # Services never carry: one scrape path per target.
    assert not service_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


# The Pod Security Standards' container rules that concern what the injector adds
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP",
                         "SETUID", "SYS_CHROOT"}


def restricted_problems(container: dict[str, Any]) -> list[str]:
    sc = container.get("securityContext") or {}
    problems = []
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") == 0:
        problems.append("runAsNonRoot")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        problems.append("drop ALL")
    if set((sc.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("added capabilities")
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile")
    return problems


def test_the_default_mode_meets_the_restricted_pod_security_level() -> None:
    patched, _ = inject(deployment_pod())
    [sidecar] = sidecars(patched)
    assert restricted_problems(sidecar) == []
    assert all("hostPath" not in v for v in patched["spec"]["volumes"])


def test_iptables_mode_needs_the_privileged_level() -> None:
    patched, _ = inject(deployment_pod(annotations={"redrive.io/intercept": "iptables"}))
    intercept = patched["spec"]["initContainers"][0]
    assert "added capabilities" in restricted_problems(intercept)
    added = set(intercept["securityContext"]["capabilities"]["add"])
    assert added - BASELINE_CAPABILITIES == {"NET_ADMIN", "NET_RAW"} - BASELINE_CAPABILITIES
    assert "NET_ADMIN" not in BASELINE_CAPABILITIES, "baseline does not allow it either"


def test_the_sidecar_accepts_the_injected_settings(tmp_path: Path) -> None:
    """The injected env parses as the sidecar's own settings, the per-pod values included."""
    pod = deployment_pod()
    patched, _ = inject(pod)
    [sidecar] = sidecars(patched)
    environ = {name: str(e["value"]) for name, e in env_map(sidecar).items() if "value" in e}
    environ["REDRIVE_SPOOL_DIR"] = str(tmp_path / "spool")
    settings = SidecarSettings.from_env(environ)
    assert settings.status.topic == "redrive.shop.web.status"
    assert settings.status.url == "http://web-redrive-retry-worker-status.shop.svc:9080"
    assert settings.capture.exclude_paths == ("/healthz",)
    assert settings.capture.methods == frozenset({"POST", "PUT", "PATCH", "DELETE"})
