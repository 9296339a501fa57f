"""helm lint, and every object valid on every supported Kubernetes minor or its CRD schema."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tests.chart.chartlib import (
    CASES,
    CHART,
    CRD_FILES,
    SUPPORTED_KUBE_VERSIONS,
    HelmError,
    ci_values_files,
    helm,
    render,
    validate_any,
    validate_k8s,
)


def test_helm_lint_strict_passes_for_the_defaults() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", ci_values_files(), ids=lambda p: p.name)
def test_helm_lint_strict_passes_for_each_ci_values_file(values) -> None:
    out = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in out


def test_there_is_a_ci_values_file_per_option_set() -> None:
    names = {p.name for p in ci_values_files()}
    for expected in ("strimzi-values.yaml", "monitoring-values.yaml",
                     "plain-sidecar-values.yaml", "pvc-spool-values.yaml",
                     "networkpolicy-values.yaml", "autoscaling-values.yaml",
                     "kind-values.yaml"):
        assert expected in names


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_every_rendered_object_is_valid_for_its_schema(case: str) -> None:
    rendered = render(case)
    assert rendered.docs, f"{case} rendered nothing"
    for doc in rendered.docs:
        validate_any(doc, rendered.case.kube_version)


def test_supported_minors_run_from_1_29_to_the_newest_schemas_known() -> None:
    minors = [int(v.split(".")[1]) for v in SUPPORTED_KUBE_VERSIONS]
    assert minors[0] == 29 and minors == list(range(29, minors[-1] + 1))
    assert minors[-1] >= 33


@pytest.mark.parametrize("version", SUPPORTED_KUBE_VERSIONS)
@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("default") is False
                                  or c == "default"], ids=str)
def test_every_case_renders_valid_on_every_supported_minor(case: str, version: str) -> None:
    rendered = render(case, version)
    assert rendered.docs
    for doc in rendered.docs:
        validate_any(doc, version)


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(render("default").get("Deployment", "demo-redrive-backend"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(AssertionError, match="livenessprobe"):
        validate_k8s(deployment)


def test_crd_validation_rejects_a_zookeeper_node_pool() -> None:
    pool = copy.deepcopy(render("strimzi").of_kind("KafkaNodePool")[0])
    pool["spec"]["roles"] = ["zookeeper"]
    with pytest.raises(AssertionError, match="roles"):
        validate_any(pool)


def test_every_kind_the_chart_renders_has_a_schema_here() -> None:
    kinds = {d["kind"] for name in CASES for d in render(name).docs}
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "Pod"}
    assert {k for k in kinds if k in CRD_FILES} == set(CRD_FILES)


@pytest.mark.parametrize(("setting", "message"), [
    ("sidecar.failureResponse=drop", "failureResponse"),
    ("sidecar.port=0", "port"),
    ("kafka.topic=bad/name", "topic"),
    ("sidecar.spool.size=1.5Gi", "size"),
    ("sidecar.unknownKey=1", "unknownKey"),
])
def test_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    with pytest.raises(HelmError, match=message):
        helm("template", "x", str(CHART), "--set", setting)


@pytest.mark.parametrize(("settings", "message"), [
    (("sidecar.spool.size=1Gi", "sidecar.spool.maxBytes=2000000000"), "exceeds"),
    (("sidecar.spool.persistence.enabled=true", "backend.replicaCount=3"), "ReadWriteOnce"),
    (("backend.enabled=false",), "targetUrl"),
    (("kafka.strimzi.enabled=true", "kafka.strimzi.replicationFactor=3"), "replicationFactor"),
])
def test_inconsistent_values_fail_with_a_clear_message(settings: tuple[str, ...],
                                                       message: str) -> None:
    args = ["template", "x", str(CHART)]
    for s in settings:
        args += ["--set", s]
    with pytest.raises(HelmError, match=message):
        helm(*args)


@pytest.mark.parametrize("values", [None, *ci_values_files()],
                         ids=lambda p: p.name if p else "default")
def test_install_notes_render_and_say_where_to_start(values) -> None:
    args = ["install", "demo", str(CHART), "--dry-run=client", "--namespace", "redrive-test"]
    if values:
        args += ["--values", str(values)]
    out = helm(*args)
    notes = out[out.index("NOTES:"):]
    assert "installed as release demo in namespace redrive-test" in notes
    assert "redrive.sidecar.container" in notes
    worker = ((yaml.safe_load(values.read_text()) if values else {}) or {}).get("retryWorker", {})
    if worker.get("enabled", True):
        assert re.search(r"Retry tiers: \S+\.retry\.\d+m?s\b", notes), notes
