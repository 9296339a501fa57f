"""Isolation per service: two services on one broker never see each other's records.

The design (docs/kubernetes.md, "Isolation per service"): every service gets its own
topics and consumer group, ``redrive.<namespace>.<service>`` (+ ``.retry``, ``.dlq``,
``.status``), and its own retry worker, which replays only to that service. The injector
derives the name from the pod (its namespace and app name); the chart derives the same
from a release named like the service in its namespace. Here both come from the real
thing: each sidecar's environment is what the injector patches into a pod, each worker's
is what ``helm template`` renders; then two apps fail, two sidecars capture, and each
worker must redrive only its own service's requests.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
import yaml
from aiohttp import web

from injector.mutate import review
from tests.chart.chartlib import CHART, helm
from tests.injector.support import admission_request, chart_template, deployment_pod
from tests.support.kafka import Broker
from tests.support.procs import Process, free_port, python_module
from tests.support.worker import Target, target

pytestmark = pytest.mark.slow

FAST_WORKER = {
    "REDRIVE_BACKOFF_INITIAL_SECONDS": "0.2", "REDRIVE_BACKOFF_MULTIPLIER": "2",
    "REDRIVE_BACKOFF_MAX_SECONDS": "1", "REDRIVE_BACKOFF_JITTER": "0",
    "REDRIVE_REPLAY_RATE": "0", "REDRIVE_SESSION_TIMEOUT_SECONDS": "2",
    "REDRIVE_DRAIN_TIMEOUT_SECONDS": "5", "REDRIVE_ADMIN_HOST": "127.0.0.1",
}


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def injected_sidecar_env(namespace: str, service: str, app_port: int) -> dict[str, str]:
    """The sidecar environment the injector gives a pod of ``service`` in ``namespace``."""
    pod = deployment_pod(service, port=app_port)
    decision = review(admission_request(pod, namespace), chart_template(), "redrive")
    patched = jsonpatch.apply_patch(pod, decision.patch)
    [sidecar] = [c for c in patched["spec"]["initContainers"] if c["name"] == "redrive-sidecar"]
    return literal_env(sidecar)


def chart_worker_env(namespace: str, release: str, target_url: str) -> dict[str, str]:
    """The worker environment the chart renders for a release named like the service."""
    out = helm("template", release, str(CHART), "--namespace", namespace,
               "--set", "backend.enabled=false", "--set", f"retryWorker.targetUrl={target_url}")
    [worker] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    return literal_env(worker["spec"]["template"]["spec"]["containers"][0])


async def failing_then_ok(request: web.Request, _count: int) -> web.StreamResponse:
    if request.app.get("healthy") or request.headers.get("X-Redrive-Replay"):
        return web.Response(status=200, text="ok")
    return web.Response(status=503, text="down")


async def test_two_services_on_one_broker_each_redrive_only_their_own(
        broker: Broker, tmp_path: Path) -> None:
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    services = ("orders", "payments")
    procs: list[Process] = []
    async with target(failing_then_ok) as orders_app, target(failing_then_ok) as payments_app:
        apps: dict[str, Target] = {"orders": orders_app, "payments": payments_app}
        sidecar_urls: dict[str, str] = {}
        topics: dict[str, str] = {}
        try:
            for service in services:
                env = injected_sidecar_env(namespace, service, apps[service].port)
                topics[service] = env["REDRIVE_TOPIC"]
                port = free_port()
                (tmp_path / f"spool-{service}").mkdir()
                env.pop("REDRIVE_STATUS_URL", None)
                env.update({"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                            "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_LISTEN_PORT": str(port),
                            "REDRIVE_ADMIN_HOST": "127.0.0.1",
                            "REDRIVE_ADMIN_PORT": str(free_port()),
                            "REDRIVE_SPOOL_DIR": str(tmp_path / f"spool-{service}"),
                            "POD_NAMESPACE": namespace, "POD_NAME": f"{service}-0"})
                proc = python_module("sidecar", env, name=f"sidecar-{service}")
                procs.append(proc)
                await asyncio.to_thread(proc.wait_http,
                                        f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}/readyz", 20)
                sidecar_urls[service] = f"http://127.0.0.1:{port}"
            assert topics == {s: f"redrive.{namespace}.{s}" for s in services}

            sent: dict[str, set[str]] = {s: set() for s in services}
            async with aiohttp.ClientSession() as session:
                for service in services:
                    for i in range(3):
                        body = json.dumps({"service": service, "n": i})
                        async with session.post(f"{sidecar_urls[service]}/pay", data=body,
                                                headers={"content-type": "application/json"}) \
                                as response:
                            answer = await response.json()
                            assert response.status == 503 and answer["queued"] is True, answer
                        sent[service].add(body)

            for service in services:
                env = chart_worker_env(namespace, service, sidecar_urls[service])
                # The chart's names: the topic the injected sidecar writes, its own group.
                assert env["REDRIVE_TOPIC"] == topics[service]
                assert env["REDRIVE_GROUP_ID"] == topics[service]
                assert env["REDRIVE_RETRY_TOPIC"] == f"{topics[service]}.retry"
                env.update(FAST_WORKER)
                env.update({"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                            "REDRIVE_ADMIN_PORT": str(free_port()),
                            # Two workers on one host: not both on the chart's 9080.
                            "REDRIVE_STATUS_PORT": "0",
                            "POD_NAME": f"{service}-worker"})
                proc = python_module("retry_worker", env, name=f"worker-{service}")
                procs.append(proc)

            def replayed(service: str) -> set[str]:
                return {s.body.decode() for s in apps[service].seen
                        if s.headers.get("X-Redrive-Replay")}

            for service in services:
                await apps[service].wait_for(lambda s=service: replayed(s) >= sent[s],
                                             timeout=60)
            # Let any stray replay arrive before looking for one at the wrong service.
            await asyncio.sleep(2)
            for service in services:
                assert replayed(service) == sent[service], service
                for other in services:
                    if other != service:
                        assert not replayed(service) & sent[other]
        finally:
            for proc in procs:
                await asyncio.to_thread(proc.stop)
