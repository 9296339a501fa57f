"""Read a component's /metrics into {series: value}."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import http_get


def scrape(admin_url: str) -> dict[str, float]:
    status, text = http_get(admin_url + "/metrics")
    assert status == 200, text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
