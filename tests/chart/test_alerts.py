"""The chart's alert rules: rendered by helm, checked and unit-tested with promtool.

files/alerts.yaml is the one source of the expressions; tests/chart/alerts/*.test.yaml
hold the promtool unit tests (every alert fires when it should and stays quiet
otherwise), run against the rules rendered with the default thresholds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from redrive.kafka import PERMANENT_REASONS
from tests.chart.chartlib import CHART, NAMESPACE, RELEASE, SCHEMAS, helm
from tests.chart.test_dashboard import METRIC, registered_names
from tests.support.tools import require

ALERT_TESTS = Path(__file__).resolve().parent / "alerts"
MONITORING_API = "monitoring.coreos.com/v1"


def promtool() -> str:
    return require("promtool")


def render_rule(*sets: str, api: bool = True) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--set", "monitoring.prometheusRule.enabled=true",
            "--show-only", "templates/prometheusrule.yaml"]
    if api:
        args += ["--api-versions", MONITORING_API]
    for item in sets:
        args += ["--set", item]
    try:
        out = helm(*args)
    except Exception as exc:  # helm fails --show-only when the template renders nothing
        if "could not find template" in str(exc):
            return []
        raise
    return [d for d in yaml.safe_load_all(out) if d]


def write_rules(tmp_path: Path, *sets: str) -> Path:
    (doc,) = render_rule(*sets)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc["spec"], sort_keys=False))
    return rules


def run(*args: str, cwd: Path) -> None:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def alert_names(doc: dict[str, Any]) -> set[str]:
    return {r["alert"] for g in doc["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_the_rule_is_gated_on_the_value_and_the_api() -> None:
    assert render_rule(api=False) == []
    assert render_rule("monitoring.prometheusRule.enabled=false") == []
    (doc,) = render_rule()
    assert doc["kind"] == "PrometheusRule"


def test_the_rendered_rule_is_valid_for_the_crd() -> None:
    (doc,) = render_rule("monitoring.prometheusRule.labels.release=kps")
    crd = yaml.safe_load(
        (SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_prometheusrules.yaml")
        .read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    errors = list(jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])
                  .iter_errors(doc))
    assert not errors, [e.message for e in errors]
    assert doc["metadata"]["labels"]["release"] == "kps"


def test_every_alert_has_severity_annotations_and_a_runbook_anchor() -> None:
    (doc,) = render_rule()
    runbooks = (CHART.parents[1] / "docs" / "runbooks.md").read_text().lower()
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule
            ann = rule["annotations"]
            assert ann["summary"] and ann["description"], rule
            anchor = ann["runbook_url"].rsplit("#", 1)[1]
            assert anchor == rule["alert"].lower()
            assert f"## {rule['alert'].lower()}" in runbooks, f"no runbook for {rule['alert']}"


def test_promtool_checks_and_unit_tests_every_alert(tmp_path: Path) -> None:
    write_rules(tmp_path)
    run("check", "rules", "rules.yaml", cwd=tmp_path)
    tests = sorted(ALERT_TESTS.glob("*.test.yaml"))
    assert tests
    tested: set[str] = set()
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
        spec = yaml.safe_load(test.read_text())
        tested |= {a["alertname"] for t in spec["tests"] for a in t["alert_rule_test"]
                   if a.get("exp_alerts")}
    (doc,) = render_rule()
    assert alert_names(doc) == tested, "every alert needs a promtool test where it fires"
    run("test", "rules", *(t.name for t in tests), cwd=tmp_path)


def test_thresholds_come_from_values(tmp_path: Path) -> None:
    (doc,) = render_rule("monitoring.prometheusRule.thresholds.consumerLagRecords=42",
                         "sidecar.spool.maxBytes=1000", "sidecar.spool.size=2Ki")
    exprs = {r["alert"]: r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]}
    assert exprs["RedriveWorkerLagHigh"].endswith("> 42")
    assert exprs["RedriveSpoolFilling"].endswith("> 0.8 * 1000")
    rules = write_rules(tmp_path, "monitoring.prometheusRule.thresholds.consumerLagRecords=42")
    run("check", "rules", rules.name, cwd=tmp_path)


def test_every_alert_names_metrics_the_services_register() -> None:
    """An alert on a metric nobody exports never fires: each name in the expressions (and
    in the promtool tests' input series) is one the sidecar or the worker registers, and
    the quarantine tests use the `reason` values the code really sets."""
    registered = registered_names()
    (doc,) = render_rule()
    exprs = " ".join(r["expr"] for g in doc["spec"]["groups"] for r in g["rules"])
    used = set(METRIC.findall(exprs))
    assert {"redrive_sidecar_kafka_connected", "redrive_sidecar_quarantined_records_total",
            "redrive_retry_worker_quarantined_records_total"} <= used
    assert used <= registered, used - registered
    series = " ".join(s["series"] for path in sorted(ALERT_TESTS.glob("*.test.yaml"))
                      for t in yaml.safe_load(path.read_text())["tests"]
                      for s in t.get("input_series", []))
    assert set(METRIC.findall(series)) <= registered
    reasons = set(re.findall(r'quarantined_records_total\{[^}]*reason="([^"]+)"', series))
    assert reasons and reasons <= set(PERMANENT_REASONS), reasons

