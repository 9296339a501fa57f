"""The console in a real browser: headless Chromium over WebDriver, a real worker process,
the real broker. Without the token the console refuses; with it, the operator finds a dead
letter, replays it and sees it delivered.

``REDRIVE_SCREENSHOT_DIR=docs/images`` also saves the screenshots there (docs/status.md).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from aiohttp import web

from redrive.envelope import Source
from tests.support.browser import Browser
from tests.support.kafka import Broker
from tests.support.status import start_worker_process, wait_for_state
from tests.support.worker import make_record, produce_records, target

TOKEN = "browser-test-token-0123456789abcdef"  # noqa: S105 - a test token


async def orders_refuse_first(request: web.Request, count: int) -> web.StreamResponse:
    refused = request.path.startswith("/api/orders") and count == 1
    return web.Response(status=400 if refused else 201, text="{}")


def keep(shot: Path) -> None:
    where = os.environ.get("REDRIVE_SCREENSHOT_DIR")
    if where:
        shutil.copy(shot, Path(where) / shot.name)


async def test_an_operator_replays_a_dead_letter_in_a_real_browser(
        broker: Broker, topic: str, tmp_path: Path) -> None:
    async with target(orders_refuse_first) as t:
        w = await asyncio.to_thread(
            start_worker_process, broker.bootstrap, topic, t.url, group=f"g-{topic}",
            REDRIVE_CONSOLE_TOKEN=TOKEN, REDRIVE_MAX_ATTEMPTS="3")
        browser: Browser | None = None
        try:
            shop = Source(pod="shop-api-7d9f-x2x", namespace="shop")
            users = [make_record(uri=f"/api/users/{i}", path=f"/api/users/{i}", source=shop)
                     for i in range(4)]
            orders = [make_record(uri=f"/api/orders/{i}", path=f"/api/orders/{i}",
                                  source=shop) for i in range(2)]
            await produce_records(broker.bootstrap, topic, [*users, *orders])
            for r in orders:
                await asyncio.to_thread(
                    wait_for_state, f"{w.status_url}/v1/requests/{r.id}",
                    lambda code, body: code == 200 and body["state"] == "dead_lettered")
            for r in users:
                await asyncio.to_thread(
                    wait_for_state, f"{w.status_url}/v1/requests/{r.id}",
                    lambda code, body: code == 200 and body["state"] == "delivered")
            chosen = orders[0].id

            browser = await asyncio.to_thread(Browser)
            b = browser
            # Without the token: a sign-in form, no data.
            await asyncio.to_thread(b.get, f"{w.status_url}/console/?state=dead_lettered")
            page = await asyncio.to_thread(b.source)
            assert "Sign in" in page and chosen not in page
            await asyncio.to_thread(b.type, "#token", "not-the-token-at-all")
            await asyncio.to_thread(b.click, "#sign-in")
            page = await asyncio.to_thread(b.wait_for_text, "That token is not right")
            assert chosen not in page

            # With the token: find the dead letter, replay it.
            await asyncio.to_thread(b.type, "#token", TOKEN)
            await asyncio.to_thread(b.click, "#sign-in")
            await asyncio.to_thread(b.wait_for_text, "Dead letters")
            assert "token" not in (await asyncio.to_thread(b.current_url)).split("?")[-1]
            await asyncio.to_thread(b.get, f"{w.status_url}/console/?state=dead_lettered")
            page = await asyncio.to_thread(b.wait_for_text, chosen)
            await asyncio.to_thread(b.click, f"input[name=id][value='{chosen}']")
            await asyncio.to_thread(b.click, "#replay-selected")
            await asyncio.to_thread(b.wait_for_text, "Replayed 1 record(s)")
            await asyncio.to_thread(
                wait_for_state, f"{w.status_url}/v1/requests/{chosen}",
                lambda code, body: code == 200 and body["state"] == "delivered")
            await asyncio.to_thread(b.get, f"{w.status_url}/console/")
            page = await asyncio.to_thread(b.wait_for_text, "delivered")
            assert "Dead letters (1)" in page  # the replayed letter is no longer listed
            assert re.search(rf"""state-delivered["']><td><a href=["']/console/requests/"""
                             rf"{chosen}", page)
            shot = tmp_path / "console.png"
            await asyncio.to_thread(b.screenshot, shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            keep(shot)

            await asyncio.to_thread(b.get, f"{w.status_url}/console/requests/{chosen}")
            page = await asyncio.to_thread(b.wait_for_text, "State history")
            assert "dead_lettered" in page and "delivered" in page
            detail = tmp_path / "console-request.png"
            await asyncio.to_thread(b.screenshot, detail)
            keep(detail)
        finally:
            if browser is not None:
                await asyncio.to_thread(browser.close)
            w.process.stop()
