"""The one Kubernetes API call the injector makes: merge its CA into its webhook's caBundle.

A few lines of HTTP over the pod's service-account token instead of a client library; the
ClusterRole allows ``get`` and ``patch`` on this one MutatingWebhookConfiguration only.
The patch is a JSONPatch whose first operation tests the ``resourceVersion`` it read, so two
replicas updating at once never drop each other's CA: the loser reads again and retries.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from injector.certs import ca_bundle

log = logging.getLogger(__name__)

WEBHOOKS_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
ATTEMPTS = 5


class KubeError(RuntimeError):
    """The API server refused or could not be reached."""


@dataclass(frozen=True)
class ApiServer:
    url: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def in_pod(cls, url: str, service_account_dir: Path) -> ApiServer:
        return cls(url, service_account_dir / "token", service_account_dir / "ca.crt")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def headers(self) -> dict[str, str]:
        # Re-read each time: the kubelet rotates projected tokens.
        token = self.token_file.read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}"}


async def publish_ca(api: ApiServer, configuration: str, ca_pem: bytes,
                     timeout: float = 10.0) -> int:
    """Merge ``ca_pem`` into every webhook's caBundle of ``configuration``; returns how many
    webhooks it updated. Raises :class:`KubeError` after ``ATTEMPTS`` conflicts or errors."""
    url = f"{api.url}{WEBHOOKS_PATH}/{configuration}"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(ssl=api.ssl_context())
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        last = ""
        for _ in range(ATTEMPTS):
            try:
                async with session.get(url, headers=api.headers()) as response:
                    if response.status != 200:
                        raise KubeError(f"GET {configuration}: HTTP {response.status}: "
                                        f"{(await response.text())[:300]}")
                    current: dict[str, Any] = await response.json()
                ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion",
                                              "value": current["metadata"]["resourceVersion"]}]
                for index, hook in enumerate(current.get("webhooks") or []):
                    old = base64.b64decode(hook.get("clientConfig", {}).get("caBundle") or "")
                    bundle = base64.b64encode(ca_bundle(old, ca_pem)).decode()
                    ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                                "value": bundle})
                headers = {**api.headers(), "Content-Type": "application/json-patch+json"}
                async with session.patch(url, data=json.dumps(ops), headers=headers) as response:
                    if response.status == 200:
                        return len(ops) - 1
                    last = f"HTTP {response.status}: {(await response.text())[:300]}"
                    if response.status not in (409, 422, 500, 503):
                        raise KubeError(f"PATCH {configuration}: {last}")
                    log.info("caBundle update conflicted, retrying", extra={"detail": last})
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = repr(exc)
        raise KubeError(f"could not update the caBundle of {configuration}: {last}")
