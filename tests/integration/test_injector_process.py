"""The injector as a real process over real HTTPS: ``python -m injector``.

With certificate files (cert-manager's case) and with a certificate it makes itself, whose
CA it merges into its webhook configuration's caBundle through a stand-in for the API
server's two endpoints (GET and a JSONPatch PATCH with a resourceVersion test), as it does
in a cluster. The client then trusts the webhook only through that caBundle, as the API
server does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from aiohttp import web
from cryptography import x509

from tests.injector.support import admission_review, deployment_pod
from tests.support.pki import make_pki
from tests.support.procs import Process, free_port, http_get, python_module

pytestmark = pytest.mark.slow


def post_review(port: int, review: dict[str, Any], context: ssl.SSLContext,
                host: str = "localhost") -> dict[str, Any]:
    request = urllib.request.Request(
        f"https://{host}:{port}/mutate", data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def start(env: dict[str, str]) -> tuple[Process, int, int]:
    port, admin = free_port(), free_port()
    proc = python_module("injector", {"REDRIVE_INJECTOR_PORT": str(port),
                                      "REDRIVE_INJECTOR_HOST": "127.0.0.1",
                                      "REDRIVE_ADMIN_PORT": str(admin),
                                      "REDRIVE_ADMIN_HOST": "127.0.0.1",
                                      "POD_NAMESPACE": "redrive", **env})
    proc.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=30)
    return proc, port, admin


def test_the_injector_serves_admission_reviews_over_https_with_given_files(
        tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    proc, port, admin = start({"REDRIVE_INJECTOR_TLS_CERT_FILE": str(pki / "server.crt"),
                               "REDRIVE_INJECTOR_TLS_KEY_FILE": str(pki / "server.key")})
    try:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        pod = deployment_pod()
        review = admission_review(pod)
        answer = post_review(port, review, trusted)
        response = answer["response"]
        assert answer["kind"] == "AdmissionReview" and response["uid"] == review["request"]["uid"]
        assert response["allowed"] is True and response["patchType"] == "JSONPatch"
        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        assert [c["name"] for c in patched["spec"]["initContainers"]] == ["redrive-sidecar"]
        refused = post_review(port, admission_review(deployment_pod(
            annotations={"redrive.io/failure-response": "drop"})), trusted)["response"]
        assert refused["allowed"] is False and refused["status"]["code"] == 400
        assert "redrive.io/failure-response" in refused["status"]["message"]
        # A client that does not trust the CA gets no answer.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            post_review(port, review, ssl.create_default_context())
        status, metrics = http_get(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200
        assert 'redrive_injector_admissions_total{outcome="injected"} 1.0' in metrics
        assert 'redrive_injector_admissions_total{outcome="refused"} 1.0' in metrics
        assert http_get(f"http://127.0.0.1:{admin}/healthz")[0] == 200
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-2000:]


class FakeApiServer:
    """The two API calls the injector makes, on 127.0.0.1 over TLS, with a bearer token."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = 1
        self.conflicts = 1  # the first PATCH loses a race, as with two replicas
        self.patches = 0
        self.config: dict[str, Any] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "resourceVersion": "1"},
            "webhooks": [{"name": n, "clientConfig": {"service": {"name": "x"}}}
                         for n in ("namespace.sidecar.redrive.io", "object.sidecar.redrive.io")],
        }

    def app(self) -> web.Application:
        path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{self.name}"

        def authorised(request: web.Request) -> bool:
            return request.headers.get("Authorization") == "Bearer token-123"

        async def get(request: web.Request) -> web.Response:
            if not authorised(request):
                return web.json_response({}, status=401)
            return web.json_response(self.config)

        async def patch(request: web.Request) -> web.Response:
            if not authorised(request):
                return web.json_response({}, status=401)
            assert request.content_type == "application/json-patch+json"
            ops = await request.json()
            if self.conflicts:
                self.conflicts -= 1
                self.version += 1
                self.config["metadata"]["resourceVersion"] = str(self.version)
            try:
                self.config = jsonpatch.apply_patch(self.config, ops)
            except jsonpatch.JsonPatchTestFailed:
                return web.json_response({"reason": "Invalid"}, status=422)
            self.patches += 1
            self.version += 1
            self.config["metadata"]["resourceVersion"] = str(self.version)
            return web.json_response(self.config)

        app = web.Application()
        app.router.add_get(path, get)
        app.router.add_patch(path, patch)
        return app


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[FakeApiServer, int, Path]]:
    (tmp_path / "api").mkdir()
    pki = make_pki(tmp_path / "api")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("token-123\n")
    (account / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    fake = FakeApiServer("redrive-injector")
    port = free_port()
    loop = asyncio.new_event_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    runner = web.AppRunner(fake.app(), access_log=None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port,
                                            ssl_context=context).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fake-api-server", daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield fake, port, account
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_self_made_certificate_is_trusted_through_the_webhooks_ca_bundle(
        api_server: tuple[FakeApiServer, int, Path], tmp_path: Path) -> None:
    fake, api_port, account = api_server
    proc, port, _ = start({"REDRIVE_INJECTOR_WEBHOOK_CONFIGURATION": fake.name,
                           "REDRIVE_INJECTOR_SERVICE_NAME": "redrive-injector",
                           "KUBERNETES_SERVICE_HOST": "localhost",
                           "KUBERNETES_SERVICE_PORT": str(api_port),
                           "REDRIVE_INJECTOR_SERVICE_ACCOUNT_DIR": str(account)})
    try:
        bundles = {base64.b64decode(h["clientConfig"]["caBundle"])
                   for h in fake.config["webhooks"]}
        assert len(bundles) == 1 and fake.patches == 1, "one bundle for both webhooks"
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(bundles.pop())
        # Trust only the caBundle, and check the name the API server uses.
        context = ssl.create_default_context(cafile=str(bundle))
        context.check_hostname = False  # we connect to 127.0.0.1; the SAN is checked below
        answer = post_review(port, admission_review(deployment_pod()), context, "127.0.0.1")
        assert answer["response"]["allowed"] is True
        peer = ssl.get_server_certificate(("127.0.0.1", port))
        cert = x509.load_pem_x509_certificate(peer.encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "redrive-injector.redrive.svc" in sans.get_values_for_type(x509.DNSName)
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-2000:]


def test_a_bad_configuration_exits_2_naming_every_variable(tmp_path: Path) -> None:
    proc = Process([sys.executable, "-m", "injector"], env={
        "REDRIVE_INJECTOR_PORT": "99999", "REDRIVE_INJECTOR_TLS_CERT_FILE": str(tmp_path / "x"),
        "REDRIVE_INJECTOR_NATIVE_SIDECAR": "maybe"}, name="injector-bad")
    assert proc.wait(30) == 2
    out = proc.output()
    for name in ("REDRIVE_INJECTOR_PORT", "REDRIVE_INJECTOR_TLS_CERT_FILE",
                 "REDRIVE_INJECTOR_NATIVE_SIDECAR"):
        assert name in out
    proc.stop()
