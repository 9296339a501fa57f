"""The webhook: ``POST /mutate`` over HTTPS, and the TLS material behind it.

``build_app`` turns AdmissionReviews into answers with :func:`injector.mutate.review`.
``Tls`` owns the server's ``SSLContext``: it loads the given files (and reloads them when
cert-manager renews them) or issues its own certificate and renews it before it expires;
an ``SSLContext`` takes a new chain in place, so renewals need no restart and new
connections get the new certificate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import ssl
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from injector import certs, kube
from injector.metrics import InjectorMetrics
from injector.mutate import review
from injector.settings import Settings
from injector.template import Template

log = logging.getLogger(__name__)

TEMPLATE: web.AppKey[Template] = web.AppKey("template", Template)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
METRICS: web.AppKey[InjectorMetrics] = web.AppKey("metrics", InjectorMetrics)
MAX_REVIEW_BYTES = 4 * 1024 * 1024
FILE_CHECK_SECONDS = 30.0


def answer(uid: str, allowed: bool, message: str = "",
           patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if not allowed:
        response["status"] = {"code": 400, "reason": "BadRequest", "message": message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}


async def mutate(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        body = await request.json()
        req = body["request"]
        uid = str(req["uid"])
    except (ValueError, KeyError, TypeError):
        metrics.admissions.labels(outcome="error").inc()
        return web.json_response({"error": "expected an admission.k8s.io/v1 AdmissionReview"},
                                 status=400)
    settings = request.app[SETTINGS]
    decision = review(req, request.app[TEMPLATE], settings.identity.namespace,
                      settings.injection.default_intercept)
    metrics.admissions.labels(outcome=decision.outcome).inc()
    meta = (req.get("object") or {}).get("metadata") or {}
    log.info("admission", extra={
        "outcome": decision.outcome, "namespace": req.get("namespace"),
        "pod": meta.get("name") or meta.get("generateName"), "reason": decision.reason})
    return web.json_response(answer(uid, decision.allowed, decision.reason, decision.patch))


def build_app(settings: Settings, template: Template, metrics: InjectorMetrics) -> web.Application:
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app[SETTINGS] = settings
    app[TEMPLATE] = template
    app[METRICS] = metrics
    app.router.add_post("/mutate", mutate)
    return app


class Tls:
    """The webhook's TLS context, kept current (``run`` renews or reloads until cancelled)."""

    def __init__(self, settings: Settings, metrics: InjectorMetrics,
                 api: kube.ApiServer | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.api = api
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ready = False
        self._mtimes: tuple[float, float] | None = None
        self._issued: certs.Issued | None = None

    def dns_names(self) -> list[str]:
        service = self.settings.certs.service_name
        namespace = self.settings.identity.namespace or "default"
        return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local",
                f"{service}.{namespace}", service, "localhost"]

    def _load(self, cert_pem: bytes, key_pem: bytes) -> None:
        # load_cert_chain reads files only: write to a private temporary directory.
        with tempfile.TemporaryDirectory(prefix="redrive-injector-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(key_pem)
            self.context.load_cert_chain(cert, key)

    def load_files(self) -> bool:
        """(Re)load the certificate files when they changed; True when loaded."""
        webhook = self.settings.webhook
        cert_file, key_file = webhook.tls_cert_file, webhook.tls_key_file
        assert cert_file is not None and key_file is not None
        mtimes = (cert_file.stat().st_mtime, key_file.stat().st_mtime)
        if mtimes == self._mtimes:
            return False
        self.context.load_cert_chain(cert_file, key_file)
        self._mtimes = mtimes
        from cryptography import x509  # noqa: PLC0415 - only for the expiry gauge

        expiry = x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
        self.metrics.certificate_expiry.set(expiry.timestamp())
        log.info("certificate loaded", extra={"cert_file": str(cert_file),
                                              "not_after": expiry.isoformat()})
        return True

    async def issue(self) -> None:
        """A new CA and serving certificate; the CA goes into the webhook's caBundle first,
        so the API server trusts the certificate before the first connection uses it."""
        days = self.settings.certs.validity_days
        issued = certs.issue(self.dns_names(), days)
        configuration = self.settings.certs.webhook_configuration
        if configuration:
            api = self.api or kube.ApiServer.in_pod(self.settings.certs.api_url,
                                                    self.settings.certs.service_account_dir)
            count = await kube.publish_ca(api, configuration, issued.ca_pem)
            log.info("caBundle updated", extra={"webhook_configuration": configuration,
                                                "webhooks": count})
        self._load(issued.cert_pem, issued.key_pem)
        self._issued = issued
        self.metrics.certificate_expiry.set(issued.not_after.timestamp())
        log.info("certificate issued", extra={"not_after": issued.not_after.isoformat(),
                                              "dns_names": self.dns_names()})

    async def start(self) -> None:
        if self.settings.webhook.tls_cert_file:
            self.load_files()
        else:
            await self.issue()
        self.ready = True

    async def run(self) -> None:
        """Until cancelled: reload changed files, or renew the own certificate in time."""
        days = self.settings.certs.validity_days
        while True:
            if self.settings.webhook.tls_cert_file:
                await asyncio.sleep(FILE_CHECK_SECONDS)
                try:
                    self.load_files()
                except (OSError, ssl.SSLError) as exc:
                    log.warning("certificate reload failed; keeping the current one",
                                extra={"error": repr(exc)})
                continue
            assert self._issued is not None
            wait = (certs.renew_at(self._issued, days) - dt.datetime.now(dt.UTC)).total_seconds()
            await asyncio.sleep(max(wait, 1.0))
            try:
                await self.issue()
            except (kube.KubeError, OSError) as exc:
                log.error("certificate renewal failed; retrying in a minute",
                          extra={"error": repr(exc)})
                await asyncio.sleep(60.0)
