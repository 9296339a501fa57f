"""Replays keep the request's identity: an app that routes by Host gets each replay on the
virtual host the original request was for, with the forwarding headers it first saw."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support.kafka import Broker, unique_topic
from tests.support.servers import serve
from tests.support.sidecar import start_sidecar
from tests.support.worker import wait_until, worker, worker_env

VHOSTS = {"orders.example": "orders", "billing.example:8443": "billing"}


@dataclass
class HostRoutingApp:
    """Two virtual hosts and a default one; down (503) until ``healthy``."""

    healthy: bool = False
    replays: dict[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        vhost = VHOSTS.get(request.headers.get("Host", ""), "default")
        if not self.healthy:
            return web.Response(status=503, text="down")
        replay = request.headers.get("X-Redrive-Replay")
        if replay:
            self.replays[replay] = (vhost, dict(request.headers))
        return web.json_response({"vhost": vhost})


async def test_a_replay_lands_on_the_virtual_host_of_the_original_request(
        broker: Broker) -> None:
    app = HostRoutingApp()
    async with serve(app.handle) as upstream:
        topic = unique_topic("identity")
        sc = await asyncio.to_thread(start_sidecar, bootstrap=broker.bootstrap, topic=topic,
                                     upstream=upstream)
        try:
            ids = {}
            async with aiohttp.ClientSession() as s:
                for host in VHOSTS:
                    async with s.post(sc.url + "/api/orders", data=b'{"n": 1}', headers={
                            "Host": host, "X-Forwarded-For": "203.0.113.9",
                            "Content-Type": "application/json"}) as r:
                        assert r.status == 503 and (await r.json())["queued"] is True
                        ids[r.headers["X-Redrive-Id"]] = host
            app.healthy = True
            # The worker connects to the sidecar (the Service), never to a record's host.
            async with worker(worker_env(broker.bootstrap, topic, sc.url)):
                await wait_until(lambda: set(app.replays) >= set(ids), timeout=30,
                                 what="both replays delivered")
        finally:
            sc.process.stop()
    for rid, host in ids.items():
        vhost, headers = app.replays[rid]
        assert vhost == VHOSTS[host]
        assert headers["Host"] == host
        # As the app saw them the first time: the worker's address is not appended.
        assert headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
        assert headers["X-Forwarded-Host"] == host
        assert headers["X-Forwarded-Proto"] == "http"
