"""The demo backend as a real ``python -m backend`` process on loopback ports."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.backend import Backend, Reply, call, start_backend
from tests.support.procs import REPO, wait_for_port


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    """One backend shared by this module's tests (each test leaves it without faults)."""
    b = start_backend()
    yield b
    b.stop()


@pytest.fixture
def api(backend: Backend) -> Iterator[Backend]:
    """The shared backend, with faults cleared after the test."""
    yield backend
    call("DELETE", backend.url + "/_faults")


def stats(b: Backend) -> dict[str, Any]:
    body: dict[str, Any] = call("GET", b.url + "/_stats").json()
    return body


def set_fault(url: str, **fault: object) -> Reply:
    reply = call("PUT", url + "/_faults", fault)
    assert reply.status == 200, reply.body
    return reply


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without backend variables, plus ``env``."""
    keep = {k: v for k, v in os.environ.items()
            if k not in {"PORT", "HOST"} and not k.startswith(("BACKEND_", "REDRIVE_"))}
    return keep | env


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def assert_refused(url: str) -> None:
    with pytest.raises(urllib.error.URLError) as caught:
        call("GET", url, timeout=2)
    assert isinstance(caught.value.reason, ConnectionRefusedError)


# --- the original demo's API --------------------------------------------------------------

def test_health_answers_ok_with_an_uptime(api: Backend) -> None:
    reply = call("GET", api.url + "/api/health")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert body["status"] == "ok"
    assert body["uptime_seconds"] >= 0


def test_users_are_listed_with_the_seeded_ones_first(api: Backend) -> None:
    reply = call("GET", api.url + "/api/users")
    assert reply.status == 200
    users = reply.json()["users"]
    assert [u["id"] for u in users[:3]] == [1, 2, 3]
    assert set(users[0]) == {"id", "name", "email"}


def test_a_created_user_is_returned_with_its_id_and_then_listed(api: Backend) -> None:
    before = stats(api)["users_created"]
    reply = call("POST", api.url + "/api/users", {"name": "Barbara Liskov",
                                                  "email": "barbara@example.com"})
    assert reply.status == 201
    user = reply.json()
    assert isinstance(user["id"], int)
    assert user | {"id": 0} == {"id": 0, "name": "Barbara Liskov", "email": "barbara@example.com"}
    assert user in call("GET", api.url + "/api/users").json()["users"]
    assert stats(api)["users_created"] == before + 1


@pytest.mark.parametrize(("data", "error", "field"), [
    (b'{"name": "Ada"}', "validation_error", "email"),
    (b'{"name": "", "email": "a@b.co"}', "validation_error", "name"),
    (b'{"name": "Ada", "email": "nope"}', "validation_error", "email"),
    (b"[1, 2]", "validation_error", "body"),
    (b"{not json", "invalid_json", "body"),
    (b"", "invalid_json", "body"),
])
def test_an_invalid_user_gets_400_with_a_json_error(
        api: Backend, data: bytes, error: str, field: str) -> None:
    before = stats(api)["users_created"]
    reply = call("POST", api.url + "/api/users", data=data,
                 headers={"Content-Type": "application/json"})
    assert reply.status == 400
    body = reply.json()
    assert (body["error"], body["field"]) == (error, field)
    assert body["message"]
    assert stats(api)["users_created"] == before


def test_data_answers_items_and_when_they_were_generated(api: Backend) -> None:
    body = call("GET", api.url + "/api/data").json()
    assert len(body["items"]) >= 1
    assert body["generated_at"].endswith("Z")


def test_an_unknown_path_gets_a_json_404(api: Backend) -> None:
    reply = call("GET", api.url + "/no/such/thing")
    assert reply.status == 404
    assert reply.json()["error"] == "not_found"


def test_a_wrong_method_gets_a_json_405_with_allow(api: Backend) -> None:
    reply = call("DELETE", api.url + "/api/users")
    assert reply.status == 405
    assert reply.json()["error"] == "method_not_allowed"
    assert "POST" in reply.headers["Allow"]


# --- idempotency --------------------------------------------------------------------------

def test_a_repeated_idempotency_key_replays_the_first_answer_and_creates_nothing(
        api: Backend) -> None:
    key = new_key()
    user = {"name": "Tony Hoare", "email": "tony@example.com"}
    before = stats(api)
    first = call("POST", api.url + "/api/users", user, headers={"Idempotency-Key": key})
    second = call("POST", api.url + "/api/users", user, headers={"Idempotency-Key": key})
    assert first.status == second.status == 201
    assert second.body == first.body
    assert first.headers["Idempotent-Replayed"] is None
    assert second.headers["Idempotent-Replayed"] == "true"
    after = stats(api)
    assert after["users_created"] == before["users_created"] + 1
    assert after["idempotent_replays"] == before["idempotent_replays"] + 1


def test_the_same_json_re_encoded_counts_as_the_same_request(api: Backend) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    first = call("POST", api.url + "/api/users",
                 data=b'{"name": "Re Encoded", "email": "re@example.com"}', headers=headers)
    second = call("POST", api.url + "/api/users",
                  data=b'{"email":"re@example.com","name":"Re Encoded"}', headers=headers)
    assert first.status == second.status == 201
    assert second.headers["Idempotent-Replayed"] == "true"


def test_a_reused_key_with_a_different_body_gets_422_and_creates_nothing(api: Backend) -> None:
    key = new_key()
    call("POST", api.url + "/api/users", {"name": "A", "email": "a@example.com"},
         headers={"Idempotency-Key": key})
    before = stats(api)["users_created"]
    reply = call("POST", api.url + "/api/users", {"name": "B", "email": "b@example.com"},
                 headers={"Idempotency-Key": key})
    assert reply.status == 422
    assert reply.json()["error"] == "idempotency_key_reused"
    assert stats(api)["users_created"] == before


def test_a_reused_key_on_another_path_gets_422(api: Backend) -> None:
    key = new_key()
    call("POST", api.url + "/api/users", {"name": "A", "email": "a@example.com"},
         headers={"Idempotency-Key": key})
    reply = call("POST", api.url + "/api/users?again=1",
                 {"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": key})
    assert reply.status == 422


def test_a_validation_error_is_replayed_too(api: Backend) -> None:
    key = new_key()
    first = call("POST", api.url + "/api/users", {"name": "A"}, headers={"Idempotency-Key": key})
    second = call("POST", api.url + "/api/users", {"name": "A"}, headers={"Idempotency-Key": key})
    assert first.status == second.status == 400
    assert second.headers["Idempotent-Replayed"] == "true"


def test_an_empty_idempotency_key_is_a_400(api: Backend) -> None:
    reply = call("POST", api.url + "/api/users", {"name": "A", "email": "a@example.com"},
                 headers={"Idempotency-Key": '""'})
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_idempotency_key"


async def test_concurrent_requests_with_one_key_create_one_user(api: Backend) -> None:
    key = new_key()
    before = stats(api)
    user = {"name": "Leslie Lamport", "email": "leslie@example.com"}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> tuple[int, str, bytes]:
            async with session.post(api.url + "/api/users", json=user,
                                    headers={"Idempotency-Key": key}) as resp:
                return resp.status, resp.headers.get("Idempotent-Replayed", ""), await resp.read()

        results = await asyncio.gather(*(post() for _ in range(10)))
    assert {status for status, _, _ in results} == {201}
    assert len({body for _, _, body in results}) == 1
    assert sorted(replayed for _, replayed, _ in results) == [""] + ["true"] * 9
    after = stats(api)
    assert after["users_created"] == before["users_created"] + 1


def test_a_request_faulted_with_a_key_is_applied_once_the_fault_clears(api: Backend) -> None:
    key = new_key()
    user = {"name": "Barbara", "email": "b@example.com"}
    before = stats(api)["users_created"]
    set_fault(api.url, mode="status", status=503, count=1)
    assert call("POST", api.url + "/api/users", user,
                headers={"Idempotency-Key": key}).status == 503
    replay = call("POST", api.url + "/api/users", user, headers={"Idempotency-Key": key})
    assert replay.status == 201
    assert replay.headers["Idempotent-Replayed"] is None
    assert stats(api)["users_created"] == before + 1


def test_a_replay_overtaking_a_slow_original_still_creates_one_user(api: Backend) -> None:
    key = new_key()
    user = {"name": "Slow Original", "email": "slow@example.com"}
    before = stats(api)["users_created"]
    set_fault(api.url, mode="slow", delay_seconds=1.0, count=1)
    originals: list[Reply] = []
    original = threading.Thread(target=lambda: originals.append(call(
        "POST", api.url + "/api/users", user, headers={"Idempotency-Key": key})))
    original.start()
    time.sleep(0.2)  # the original is now waiting in the slow fault
    replay = call("POST", api.url + "/api/users", user, headers={"Idempotency-Key": key})
    original.join(5)
    assert replay.status == originals[0].status == 201
    assert originals[0].body == replay.body
    assert originals[0].headers["Idempotent-Replayed"] == "true"
    assert stats(api)["users_created"] == before + 1


# --- faults -------------------------------------------------------------------------------

def test_without_faults_the_state_says_none(api: Backend) -> None:
    reply = call("GET", api.url + "/_faults")
    assert reply.status == 200
    assert reply.json()["mode"] == "none"


def test_status_mode_answers_the_chosen_status_with_retry_after(api: Backend) -> None:
    set_fault(api.url, mode="status", status=502, retry_after=3)
    reply = call("GET", api.url + "/api/users")
    assert reply.status == 502
    assert reply.headers["Retry-After"] == "3"
    assert reply.json()["error"] == "injected_fault"
    assert call("GET", api.url + "/_faults").json()["mode"] == "status"


def test_a_counted_fault_fails_twice_and_then_succeeds(api: Backend) -> None:
    set_fault(api.url, mode="status", count=2)
    statuses = [call("GET", api.url + "/api/data").status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert call("GET", api.url + "/_faults").json()["mode"] == "none"


def test_a_timed_fault_recovers_by_itself(api: Backend) -> None:
    set_fault(api.url, mode="status", for_seconds=0.4)
    assert call("GET", api.url + "/api/data").status == 503
    time.sleep(0.5)
    assert call("GET", api.url + "/api/data").status == 200


def test_a_fault_touches_only_paths_under_its_prefix(api: Backend) -> None:
    set_fault(api.url, mode="status", path_prefix="/api/users")
    assert call("GET", api.url + "/api/users").status == 503
    assert call("GET", api.url + "/api/data").status == 200


def test_the_control_api_is_never_faulted(api: Backend) -> None:
    set_fault(api.url, mode="status", path_prefix="/")
    assert call("GET", api.url + "/api/data").status == 503
    assert call("GET", api.url + "/_faults").status == 200
    assert call("GET", api.url + "/_stats").status == 200


def test_slow_mode_delays_and_then_serves(api: Backend) -> None:
    set_fault(api.url, mode="slow", delay_seconds=1.5, count=1)
    started = time.monotonic()
    assert call("GET", api.url + "/api/data").status == 200
    assert time.monotonic() - started >= 1.45
    started = time.monotonic()
    assert call("GET", api.url + "/api/data").status == 200
    # Not delayed: far below the fault's delay, with room for a loaded machine.
    assert time.monotonic() - started < 1.2


def test_reset_mode_drops_the_connection_without_an_answer(api: Backend) -> None:
    before = stats(api)
    set_fault(api.url, mode="reset", count=1)
    with pytest.raises(ConnectionResetError):
        call("POST", api.url + "/api/users", {"name": "R", "email": "r@example.com"})
    assert call("GET", api.url + "/api/data").status == 200
    after = stats(api)
    assert after["users_created"] == before["users_created"]
    assert after["faults_injected"] == before["faults_injected"] + 1


def test_refuse_mode_closes_the_port_and_reopens_it_after_its_duration(api: Backend) -> None:
    set_fault(api.url, mode="refuse", for_seconds=1.0)
    assert_refused(api.url + "/api/health")
    started = time.monotonic()
    wait_for_port(api.port, timeout=5)
    assert 0.5 < time.monotonic() - started < 3
    assert call("GET", api.url + "/api/health").status == 200
    assert call("GET", api.url + "/_faults").json()["mode"] == "none"


@pytest.mark.parametrize(("fault", "field"), [
    ({"mode": "teapot"}, "mode"),
    ({"mode": "status", "status": "503"}, "status"),
    ({"mode": "slow"}, "delay_seconds"),
    ({"mode": "refuse"}, "for_seconds"),
    ({"mode": "status", "count": 0}, "count"),
    ({"mode": "status", "colour": "red"}, "colour"),
])
def test_an_invalid_fault_gets_400_naming_the_field(
        api: Backend, fault: dict[str, object], field: str) -> None:
    reply = call("PUT", api.url + "/_faults", fault)
    assert reply.status == 400
    body = reply.json()
    assert body["field"] == field
    assert field in body["message"]
    assert call("GET", api.url + "/_faults").json()["mode"] == "none"


def test_a_fault_body_that_is_not_json_gets_400(api: Backend) -> None:
    reply = call("PUT", api.url + "/_faults", data=b"mode=status")
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_json"


def test_stats_count_requests_by_route_and_faults_by_mode(api: Backend) -> None:
    before = stats(api)
    call("GET", api.url + "/api/data")
    call("GET", api.url + "/nowhere")
    set_fault(api.url, mode="status", count=1)
    call("GET", api.url + "/api/data")
    after = stats(api)
    by_path, old_by_path = after["requests_by_path"], before["requests_by_path"]
    assert by_path["/api/data"] == old_by_path.get("/api/data", 0) + 2
    assert by_path["(unmatched)"] == old_by_path.get("(unmatched)", 0) + 1
    assert "/_stats" not in by_path
    status_faults = before["faults_injected_by_mode"]["status"]
    assert after["faults_injected_by_mode"]["status"] == status_faults + 1


# --- processes with their own settings ----------------------------------------------------

def test_the_control_port_outlives_refuse_and_reopens_the_main_port_at_once() -> None:
    b = start_backend({"BACKEND_FAULT": "refuse:60"}, control_port=True)
    try:
        assert_refused(b.url + "/api/health")
        state = call("GET", b.control_url + "/_faults").json()
        assert state["mode"] == "refuse"
        assert call("GET", b.control_url + "/api/health").status == 404  # control only
        assert call("DELETE", b.control_url + "/_faults").status == 200
        assert call("GET", b.url + "/api/health", timeout=1).status == 200

        # An idle keep-alive connection is closed too, so clients reconnect and are refused.
        conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=2)
        conn.request("GET", "/api/health")
        assert conn.getresponse().read()
        # Through the control port, refuse may be open-ended: it lasts until cleared there.
        set_fault(b.control_url, mode="refuse")
        time.sleep(0.1)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.request("GET", "/api/health")
            conn.getresponse()
        conn.close()
        assert_refused(b.url + "/api/health")
        assert call("GET", b.control_url + "/_faults").json()["expires_in_seconds"] is None
        assert call("DELETE", b.control_url + "/_faults").status == 200
        assert call("GET", b.url + "/api/health", timeout=1).status == 200
    finally:
        assert b.stop() == 0


def test_sigterm_exits_0_promptly_even_during_a_slow_request() -> None:
    b = start_backend({"BACKEND_FAULT": "slow:30", "BACKEND_ACCESS_LOG": "1"})
    replies: list[Reply] = []
    caller = threading.Thread(target=lambda: replies.append(
        call("GET", b.url + "/api/data", timeout=10)))
    caller.start()
    time.sleep(0.3)
    started = time.monotonic()
    b.process.signal(signal.SIGTERM)
    assert b.process.wait(timeout=5) == 0
    assert time.monotonic() - started < 4
    caller.join(5)
    assert [r.status for r in replies] == [503]
    lines = [json.loads(line) for line in b.process.output().splitlines() if line.strip()]
    assert lines[0]["message"] == "backend listening"
    assert lines[0]["fault"] == {"mode": "slow", "delay_seconds": 30.0, "count": None,
                                 "for_seconds": None, "path_prefix": "/api/"}
    access = [line for line in lines if line["logger"] == "backend.access"]
    assert any(line["path"] == "/api/data" and line["status"] == 503 for line in access)
    assert lines[-1]["message"] == "backend stopped"
    b.stop()


def test_only_the_startup_line_is_logged_without_the_access_log(backend: Backend) -> None:
    call("GET", backend.url + "/api/health")
    lines = [json.loads(line) for line in backend.process.output().splitlines() if line.strip()]
    assert lines[0]["message"] == "backend listening"
    assert lines[0]["url"] == f"http://127.0.0.1:{backend.port}"
    assert all(line["logger"] != "backend.access" for line in lines)
    assert all(line["level"] == "info" for line in lines), lines  # no errors, e.g. from reset


def test_a_bad_port_stops_the_backend_with_exit_code_2_and_one_message() -> None:
    done = subprocess.run([sys.executable, "-m", "backend"], cwd=REPO, capture_output=True,
                          text=True, timeout=15,
                          env=clean_env(PORT="abc", BACKEND_FAULT="explode"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "PORT='abc'" in done.stderr
    assert "BACKEND_FAULT" in done.stderr


def test_a_port_in_use_stops_the_backend_with_exit_code_1(backend: Backend) -> None:
    done = subprocess.run([sys.executable, "-m", "backend"], cwd=REPO, capture_output=True,
                          text=True, timeout=15,
                          env=clean_env(PORT=str(backend.port), HOST="127.0.0.1"))
    assert done.returncode == 1
    assert "cannot listen" in done.stderr
