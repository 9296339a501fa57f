"""A real Prometheus (Debian's package) scrapes a real sidecar and a real retry worker.

The sidecar sits in front of a refused port, so every POST is captured and published; the
worker replays them to a target that answers 400, so every record is dead-lettered. The
chart's alert rules are loaded too, and the dead-letter alert must go pending or firing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import CHART, helm
from tests.support.kafka import Broker
from tests.support.procs import Process, free_port, python_module, refused_port
from tests.support.sidecar import start_sidecar
from tests.support.tools import require
from tests.support.worker import worker_env

REQUESTS = 5


class _BadRequest(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"error": "bad request"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadRequest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _prometheus() -> str:
    return require("prometheus")


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.load(resp)
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _value(base: str, expr: str) -> float | None:
    result = _query(base, expr)
    return float(result[0]["value"][1]) if result else None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _post(url: str, i: int) -> int:
    req = urllib.request.Request(f"{url}/orders", data=json.dumps({"n": i}).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         "Idempotency-Key": f"prom-{i}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_prometheus_scrapes_counts_and_alerts(broker: Broker, topic: str, tmp_path: Path,
                                              refusing_target: str) -> None:
    prometheus = _prometheus()
    sidecar = start_sidecar(bootstrap=broker.bootstrap, topic=topic,
                            upstream=f"http://127.0.0.1:{refused_port()}")
    procs: list[Process] = [sidecar.process]
    try:
        env = worker_env(broker.bootstrap, topic, refusing_target)
        worker_admin = int(env["REDRIVE_ADMIN_PORT"])
        worker = python_module("retry_worker", env, name="worker-prom")
        procs.append(worker)
        worker.wait_http(f"http://127.0.0.1:{worker_admin}/readyz", timeout=20)

        out = helm("template", "demo", str(CHART), "--set",
                   "monitoring.prometheusRule.enabled=true", "--api-versions",
                   "monitoring.coreos.com/v1", "--show-only", "templates/prometheusrule.yaml")
        (rule,) = [d for d in yaml.safe_load_all(out) if d]
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": [
                {"job_name": "sidecar",
                 "static_configs": [{"targets": [f"127.0.0.1:{sidecar.admin_port}"]}]},
                {"job_name": "retry-worker",
                 "static_configs": [{"targets": [f"127.0.0.1:{worker_admin}"]}]},
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = Process([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}"], name="prometheus")
        procs.append(prom)
        base = f"http://127.0.0.1:{port}"
        prom.wait_http(f"{base}/-/ready", timeout=20)
        _wait(lambda: _value(base, 'count(up == 1)') == 2, 20, "both targets up")

        statuses = [_post(sidecar.url, i) for i in range(REQUESTS)]
        assert statuses == [503] * REQUESTS, statuses

        _wait(lambda: _value(base, 'sum(redrive_sidecar_captures_total{result="published"})')
              == REQUESTS, 20, "published captures in Prometheus")
        assert _value(base, 'sum(redrive_sidecar_captures_total{result="lost"})') == 0
        assert _value(
            base, 'sum(redrive_sidecar_upstream_failures_total{kind="connect_refused"})'
        ) == REQUESTS
        _wait(lambda: _value(base, "sum(redrive_retry_worker_dead_letters_total)") == REQUESTS,
              30, "dead letters in Prometheus")
        by_reason = {r["metric"]["reason"]: float(r["value"][1]) for r in _query(
            base, "sum by (reason) (redrive_retry_worker_dead_letters_total) > 0")}
        assert by_reason == {"permanent": REQUESTS}, by_reason

        def alert_active() -> bool:
            alerts = _get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
            return any(a["labels"]["alertname"] == "RedriveDeadLettersGrowing"
                       and a["state"] in {"pending", "firing"} for a in alerts)

        _wait(alert_active, 15, "RedriveDeadLettersGrowing pending or firing")
    finally:
        for proc in reversed(procs):
            proc.stop()
