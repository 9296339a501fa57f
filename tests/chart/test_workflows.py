"""GitHub workflows: valid against the workflow schema, and the release does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import IMAGES, REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yaml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())  # type: ignore[no-any-return]


def test_every_workflow_validates_against_the_github_workflow_schema() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yaml", "release.yaml", "e2e-kind.yaml"}
    proc = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                      "    steps:\n      - uses: actions/checkout@v4\n        with: 3\n")
    proc = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows",
                           str(broken)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1


def test_the_release_builds_all_four_images_multi_arch_with_provenance() -> None:
    release = load("release.yaml")
    images = release["jobs"]["images"]
    assert sorted(images["strategy"]["matrix"]["component"]) == sorted(IMAGES)
    steps = {s.get("uses", "").split("@")[0]: s for s in images["steps"]}
    build = steps["docker/build-push-action"]["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64"
    assert build["provenance"] == "mode=max" and build["sbom"] is True
    assert build["file"] == "${{ matrix.component }}/Dockerfile" and build["context"] == "."
    assert "actions/attest-build-provenance" in steps
    assert images["permissions"]["id-token"] == "write"
    assert images["permissions"]["packages"] == "write"


def test_the_release_pushes_the_chart_as_an_oci_artifact() -> None:
    chart = load("release.yaml")["jobs"]["chart"]
    script = "\n".join(s.get("run", "") for s in chart["steps"])
    assert "helm package charts/redrive" in script
    assert "helm push" in script and "oci://" in script


@pytest.mark.parametrize("component", IMAGES)
def test_the_chart_defaults_name_the_images_the_release_pushes(component: str) -> None:
    values = yaml.safe_load((REPO / "charts" / "redrive" / "values.yaml").read_text())
    key = {"retry-worker": "retryWorker"}.get(component, component)
    image = values[key]["image"]
    assert (image["registry"], image["repository"]) == ("ghcr.io", f"redrive/{component}")


def test_ci_runs_the_interception_test_as_root_and_builds_the_images() -> None:
    ci = load("ci.yaml")
    runs = "\n".join(s.get("run", "") for job in ci["jobs"].values() for s in job["steps"])
    assert "sudo --preserve-env=PATH .venv/bin/pytest" in runs
    assert "tests/integration/test_intercept_netns.py" in runs
    assert "./scripts/build-images.sh" in runs
