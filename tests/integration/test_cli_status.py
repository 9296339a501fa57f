"""``redrive status ID`` as a real process, against a worker's status API and the topic."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import web

from tests.support.cli import acli
from tests.support.kafka import Broker
from tests.support.procs import free_port
from tests.support.status import get_json, wait_for_state
from tests.support.worker import make_record, produce_records, target, worker, worker_env


async def teapot(_: web.Request, __: int) -> web.StreamResponse:
    return web.Response(status=418)


async def test_status_prints_the_api_answer_and_exits_0_found_1_unknown_2_malformed(
        broker: Broker, topic: str) -> None:
    good, bad = make_record(), make_record(uri="/teapot", path="/teapot")
    async with target(lambda r, n: teapot(r, n) if r.path == "/teapot"
                      else web_ok(r, n)) as t:
        port = free_port()
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_STATUS_PORT=str(port),
                         REDRIVE_STATUS_HOST="127.0.0.1")
        async with worker(env):
            await produce_records(broker.bootstrap, topic, [good, bad])
            url = f"http://127.0.0.1:{port}"
            for rid, state in ((good.id, "delivered"), (bad.id, "dead_lettered")):
                await asyncio.to_thread(wait_for_state, f"{url}/v1/requests/{rid}",
                                        lambda code, body, state=state: code == 200
                                        and body["state"] == state)
            cli_env = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                       "REDRIVE_TOPIC": topic}
            done = await acli("status", good.id, "--status-url", url, env=cli_env)
            assert done.returncode == 0, done.stderr
            _, api, _ = await asyncio.to_thread(get_json, f"{url}/v1/requests/{good.id}")
            assert json.loads(done.stdout) == api
            assert api["state"] == "delivered" and api["response"] == {"status": 200}

            # Without a URL the CLI reads the status topic and prints the same answer.
            direct = await acli("status", bad.id, env=cli_env)
            assert direct.returncode == 0, direct.stderr
            _, api_bad, _ = await asyncio.to_thread(get_json, f"{url}/v1/requests/{bad.id}")
            assert json.loads(direct.stdout) == api_bad
            assert api_bad["reason"] == "permanent" and api_bad["response"] == {"status": 418}

            unknown = str(uuid.uuid4())
            for extra in (["--status-url", url], []):
                missing = await acli("status", unknown, *extra, env=cli_env)
                assert missing.returncode == 1 and missing.stdout == ""
            malformed = await acli("status", "nope", "--status-url", url, env=cli_env)
            assert malformed.returncode == 2 and "not a request id" in malformed.stderr
            usage = await acli("status", env=cli_env)
            assert usage.returncode == 2
            down = await acli("status", unknown, "--status-url", "http://127.0.0.1:1",
                              env=cli_env)
            assert down.returncode == 1 and "cannot reach the status API" in down.stderr


async def web_ok(_: web.Request, __: int) -> web.StreamResponse:
    return web.Response(status=200, text="ok")
