"""skaffold.yaml against its JSON schema, and kind-config.yaml wired to the chart's kind values."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.chartlib import CHART, IMAGES, REPO, SCHEMAS, render

SKAFFOLD = REPO / "skaffold.yaml"
KIND_CONFIG = REPO / "kind-config.yaml"


def skaffold() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


def validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "skaffold" / "v4beta14.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_skaffold_yaml_is_valid_for_its_schema() -> None:
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(config)]
    assert not errors, errors


def test_the_skaffold_schema_check_is_not_vacuous() -> None:
    config = copy.deepcopy(skaffold())
    config["build"]["artifacts"][0]["dockerFile"] = "typo"
    assert not validator().is_valid(config)


def test_one_artifact_per_service_folder_built_from_the_repository_root() -> None:
    artifacts = {a["image"]: a for a in skaffold()["build"]["artifacts"]}
    assert tuple(artifacts) == IMAGES
    for image, artifact in artifacts.items():
        assert artifact["context"] == "."
        dockerfile = artifact["docker"]["dockerfile"]
        assert dockerfile == f"{image}/Dockerfile"
        assert (REPO / dockerfile).is_file()


def test_strimzi_is_installed_before_the_chart_which_gets_skaffolds_images() -> None:
    strimzi, redrive = skaffold()["deploy"]["helm"]["releases"]
    assert "strimzi-kafka-operator" in strimzi["remoteChart"]
    assert strimzi["wait"] is True
    assert redrive["dependsOn"] == [strimzi["name"]]
    assert redrive["namespace"] == strimzi["namespace"], "the operator watches its own namespace"
    assert (REPO / redrive["chartPath"]).resolve() == CHART
    assert redrive["setValues"]["kafka.strimzi.enabled"] is True
    templates = redrive["setValueTemplates"]
    for image, key in (("sidecar", "sidecar"), ("retry-worker", "retryWorker"),
                       ("backend", "backend")):
        var = image.replace("-", "_")  # go templates cannot name "retry-worker"
        assert templates[f"{key}.image.repository"] == f"{{{{.IMAGE_REPO_{var}}}}}"
        assert templates[f"{key}.image.tag"] == f"{{{{.IMAGE_TAG_{var}}}}}"


def test_port_forwards_reach_objects_the_chart_renders_for_release_redrive() -> None:
    names = {("service", "redrive-backend"), ("deployment", "redrive-backend"),
             ("deployment", "redrive-retry-worker")}
    for forward in skaffold()["portForward"]:
        assert (forward["resourceType"], forward["resourceName"]) in names
    # The release is named "redrive", so fullname is "redrive" and the objects as above.
    assert skaffold()["deploy"]["helm"]["releases"][1]["name"] == "redrive"


def test_the_kind_profile_targets_the_kind_cluster_and_uses_the_kind_values() -> None:
    [profile] = [p for p in skaffold()["profiles"] if p["name"] == "kind"]
    cluster = yaml.safe_load(KIND_CONFIG.read_text())
    assert profile["activation"] == [{"kubeContext": f"kind-{cluster['name']}"}]
    patches = {p["path"]: p for p in profile["patches"]}
    assert patches["/build/local/push"]["value"] is False
    [values_file] = patches["/deploy/helm/releases/1/valuesFiles"]["value"]
    assert (REPO / values_file).resolve() == CHART / "ci" / "kind-values.yaml"


def test_kind_maps_the_demo_node_port_to_the_host() -> None:
    cluster = yaml.safe_load(KIND_CONFIG.read_text())
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    mappings = [m for node in cluster["nodes"] for m in node.get("extraPortMappings", [])]
    service = render("kind").get("Service", "demo-redrive-backend")
    assert service["spec"]["type"] == "NodePort"
    node_port = service["spec"]["ports"][0]["nodePort"]
    assert any(m["containerPort"] == node_port and m["listenAddress"] == "127.0.0.1"
               for m in mappings)


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfiles_are_multi_stage_non_root_and_take_a_base_image(image: str) -> None:
    text = (REPO / image / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert lines.count("ARG BASE_IMAGE=python:3.11-slim-bookworm") == 1
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and all("${BASE_IMAGE}" in line for line in froms)
    final = text[text.rindex("\nFROM "):]
    assert "USER 10001:10001" in final
    assert "COPY --from=build /opt/venv /opt/venv" in final
    for forbidden in ("gcc", "build-essential"):
        assert forbidden not in final
    installs = [line for line in final.splitlines() if "apt-get install" in line]
    if image == "sidecar":
        # Only iptables, for redrive-intercept (the opt-in interception init container).
        assert installs and all(line.rstrip(" \\").endswith("--no-install-recommends iptables")
                                for line in installs), installs
        assert "rm -rf /var/lib/apt/lists/*" in final
    else:
        assert not installs, installs
    package = image.replace("-", "_")
    assert f'CMD ["python", "-m", "{package}"]' in final


def test_the_kind_profile_patches_apply_and_keep_the_config_valid() -> None:
    config = skaffold()
    [profile] = [p for p in config["profiles"] if p["name"] == "kind"]
    patched = copy.deepcopy({k: v for k, v in config.items() if k != "profiles"})
    for patch in profile["patches"]:
        assert patch["op"] == "add"
        *parents, last = patch["path"].strip("/").split("/")
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = patch["value"]
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(patched)]
    assert not errors, errors
    assert patched["deploy"]["helm"]["releases"][1]["valuesFiles"]
