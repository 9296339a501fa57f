"""The demo backend's pure logic: fault specs and state, idempotency store, users, settings."""

from __future__ import annotations

import asyncio
import math

import pytest

from backend.faults import (
    NO_FAULT,
    FaultMode,
    FaultSpec,
    FaultSpecError,
    FaultState,
    parse_fault_env,
    parse_fault_spec,
)
from backend.idempotency import (
    DEFAULT_MAX_KEYS,
    IdempotencyStore,
    KeyLocks,
    StoredResponse,
    canonical_body,
    check_key,
    fingerprint,
)
from backend.settings import Settings, SettingsError
from backend.users import InvalidUser, Users, validate_new_user


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stored(fp: str = "fp", status: int = 201) -> StoredResponse:
    return StoredResponse(fingerprint=fp, status=status, body=b"{}",
                          content_type="application/json")


# --- fault specs --------------------------------------------------------------------------

def test_a_bare_status_mode_defaults_to_503_on_api_paths() -> None:
    spec = parse_fault_spec({"mode": "status"})
    assert spec == FaultSpec(mode=FaultMode.STATUS, status=503, path_prefix="/api/")


def test_every_field_of_a_full_status_fault_is_kept() -> None:
    spec = parse_fault_spec({"mode": "status", "status": 502, "retry_after": 7, "count": 2,
                             "for_seconds": 1.5, "path_prefix": "/api/users"})
    assert (spec.status, spec.retry_after, spec.count, spec.for_seconds, spec.path_prefix) == (
        502, 7, 2, 1.5, "/api/users")


def test_slow_mode_takes_its_delay_and_refuse_its_duration() -> None:
    assert parse_fault_spec({"mode": "slow", "delay_seconds": 2}).delay_seconds == 2.0
    assert parse_fault_spec({"mode": "refuse", "for_seconds": 3}).for_seconds == 3.0
    assert parse_fault_spec({"mode": "reset", "count": 1}).count == 1
    assert parse_fault_spec({"mode": "none"}) == NO_FAULT


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ("status", "body"),
    ({}, "mode"),
    ({"mode": "explode"}, "mode"),
    ({"mode": 3}, "mode"),
    ({"mode": "status", "bogus": 1}, "bogus"),
    ({"mode": "status", "status": "503"}, "status"),
    ({"mode": "status", "status": True}, "status"),
    ({"mode": "status", "status": 99}, "status"),
    ({"mode": "status", "status": 600}, "status"),
    ({"mode": "status", "retry_after": -1}, "retry_after"),
    ({"mode": "status", "retry_after": 1.5}, "retry_after"),
    ({"mode": "status", "count": 0}, "count"),
    ({"mode": "status", "count": 1.0}, "count"),
    ({"mode": "status", "for_seconds": 0}, "for_seconds"),
    ({"mode": "status", "for_seconds": math.inf}, "for_seconds"),
    ({"mode": "status", "for_seconds": math.nan}, "for_seconds"),
    ({"mode": "status", "path_prefix": "api"}, "path_prefix"),
    ({"mode": "status", "path_prefix": None}, "path_prefix"),
    ({"mode": "status", "delay_seconds": 1}, "delay_seconds"),
    ({"mode": "slow"}, "delay_seconds"),
    ({"mode": "slow", "delay_seconds": 0}, "delay_seconds"),
    ({"mode": "slow", "delay_seconds": 100_000}, "delay_seconds"),
    ({"mode": "slow", "delay_seconds": 1, "status": 503}, "status"),
    ({"mode": "reset", "retry_after": 1}, "retry_after"),
    ({"mode": "refuse"}, "for_seconds"),
    ({"mode": "refuse", "for_seconds": 1, "count": 1}, "count"),
    ({"mode": "refuse", "for_seconds": 1, "path_prefix": "/"}, "path_prefix"),
    ({"mode": "none", "status": 503}, "status"),
])
def test_an_invalid_fault_is_refused_with_the_field_named(body: object, field: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault_spec(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_refuse_may_be_open_ended_only_where_the_control_api_survives_it() -> None:
    spec = parse_fault_spec({"mode": "refuse"}, refuse_needs_duration=False)
    assert (spec.mode, spec.for_seconds) == (FaultMode.REFUSE, None)
    assert parse_fault_env("refuse", refuse_needs_duration=False) == spec
    with pytest.raises(FaultSpecError, match="BACKEND_CONTROL_PORT"):
        parse_fault_spec({"mode": "refuse"})


@pytest.mark.parametrize(("text", "expected"), [
    ("", NO_FAULT),
    ("none", NO_FAULT),
    ("reset", FaultSpec(mode=FaultMode.RESET)),
    ("status", FaultSpec(mode=FaultMode.STATUS)),
    ("status:502", FaultSpec(mode=FaultMode.STATUS, status=502)),
    (" SLOW:2.5 ", FaultSpec(mode=FaultMode.SLOW, delay_seconds=2.5)),
    ("refuse:10", FaultSpec(mode=FaultMode.REFUSE, for_seconds=10.0)),
    ('{"mode": "status", "count": 2}', FaultSpec(mode=FaultMode.STATUS, count=2)),
])
def test_the_initial_fault_is_read_from_a_short_environment_form(
        text: str, expected: FaultSpec) -> None:
    assert parse_fault_env(text) == expected


@pytest.mark.parametrize("text", ["explode", "status:abc", "reset:3", "slow", "refuse",
                                  "status:700", "{not json", '{"mode": "slow"}'])
def test_a_bad_initial_fault_names_the_variable(text: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault_env(text)
    assert caught.value.field == "BACKEND_FAULT"


# --- fault state --------------------------------------------------------------------------

def test_no_fault_serves_every_request() -> None:
    state = FaultState(FakeClock())
    assert state.take("/api/users") is None
    assert state.injected_total == 0


def test_a_fault_applies_only_under_its_path_prefix() -> None:
    state = FaultState(FakeClock())
    state.set(FaultSpec(mode=FaultMode.STATUS, path_prefix="/api/users"))
    assert state.take("/api/data") is None
    assert state.take("/api/users") is not None
    assert state.injected_total == 1
    assert state.injected_by_mode["status"] == 1


def test_a_counted_fault_recovers_after_that_many_requests() -> None:
    state = FaultState(FakeClock())
    state.set(FaultSpec(mode=FaultMode.STATUS, count=2))
    assert state.snapshot()["remaining"] == 2
    assert state.take("/api/users") is not None
    assert state.snapshot()["remaining"] == 1
    assert state.take("/api/users") is not None
    assert state.take("/api/users") is None
    assert state.current() == NO_FAULT
    assert state.injected_total == 2


def test_requests_outside_the_prefix_do_not_use_up_the_count() -> None:
    state = FaultState(FakeClock())
    state.set(FaultSpec(mode=FaultMode.RESET, count=1))
    assert state.take("/elsewhere") is None
    assert state.take("/api/data") is not None
    assert state.take("/api/data") is None


def test_a_timed_fault_expires_on_the_injected_clock() -> None:
    clock = FakeClock()
    state = FaultState(clock)
    state.set(FaultSpec(mode=FaultMode.SLOW, delay_seconds=1.0, for_seconds=5.0))
    clock.advance(4.9)
    assert state.expires_in() == pytest.approx(0.1)
    assert state.take("/api/data") is not None
    clock.advance(0.1)
    assert state.take("/api/data") is None
    assert state.current() == NO_FAULT
    assert state.expires_in() is None


def test_count_and_duration_together_end_at_whichever_comes_first() -> None:
    clock = FakeClock()
    state = FaultState(clock)
    state.set(FaultSpec(mode=FaultMode.STATUS, count=100, for_seconds=1.0))
    assert state.take("/api/x") is not None
    clock.advance(1.0)
    assert state.take("/api/x") is None


def test_setting_a_new_fault_restarts_its_count_and_clock() -> None:
    clock = FakeClock()
    state = FaultState(clock)
    state.set(FaultSpec(mode=FaultMode.STATUS, count=1, for_seconds=2.0))
    clock.advance(1.5)
    state.set(FaultSpec(mode=FaultMode.STATUS, count=3, for_seconds=2.0))
    clock.advance(1.5)
    assert state.snapshot()["remaining"] == 3
    assert state.take("/api/x") is not None


def test_clearing_returns_to_normal_but_keeps_the_injected_count() -> None:
    state = FaultState(FakeClock(), initial=FaultSpec(mode=FaultMode.STATUS))
    assert state.take("/api/x") is not None
    state.clear()
    assert state.take("/api/x") is None
    assert state.snapshot() == {"mode": "none", "remaining": None, "expires_in_seconds": None,
                                "injected_total": 1}


def test_the_snapshot_shows_the_fields_of_the_current_mode() -> None:
    clock = FakeClock()
    state = FaultState(clock)
    state.set(parse_fault_spec({"mode": "status", "status": 500, "retry_after": 3,
                                "count": 4, "for_seconds": 10}))
    clock.advance(2.5)
    assert state.snapshot() == {
        "mode": "status", "status": 500, "retry_after": 3, "count": 4, "for_seconds": 10.0,
        "path_prefix": "/api/", "remaining": 4, "expires_in_seconds": 7.5,
        "injected_total": 0}
    state.set(parse_fault_spec({"mode": "refuse", "for_seconds": 1}))
    assert state.snapshot()["mode"] == "refuse"
    assert "path_prefix" not in state.snapshot()


# --- idempotency --------------------------------------------------------------------------

def test_a_fingerprint_changes_with_method_path_or_body() -> None:
    base = fingerprint("POST", "/api/users", b'{"a":1}')
    assert base == fingerprint("post", "/api/users", b'{"a":1}')
    assert base != fingerprint("PUT", "/api/users", b'{"a":1}')
    assert base != fingerprint("POST", "/api/users?x=1", b'{"a":1}')
    assert base != fingerprint("POST", "/api/users", b'{"a":2}')
    # Lengths are part of the digest, so moving bytes between parts changes it too.
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/ab", b"")


def test_json_bodies_are_compared_by_content_not_by_spacing_or_key_order() -> None:
    json_type = "application/json"
    assert fingerprint("POST", "/u", b'{"a": 1, "b": [1, 2]}', json_type) == fingerprint(
        "POST", "/u", b'{"b":[1,2],"a":1}', json_type)
    assert fingerprint("POST", "/u", b'{"a": 1}', json_type) != fingerprint(
        "POST", "/u", b'{"a": 2}', json_type)
    assert fingerprint("POST", "/u", b'{"a": 1}', "text/plain") != fingerprint(
        "POST", "/u", b'{"a":1}', "text/plain")
    assert canonical_body(b"{broken", json_type) == b"{broken"


def test_keys_may_be_quoted_or_plain_but_not_empty_long_or_unprintable() -> None:
    assert check_key("abc-123") == "abc-123"
    assert check_key('"abc-123"') == "abc-123"
    assert check_key("  abc ") == "abc"
    assert check_key("") is None
    assert check_key('""') is None
    assert check_key("x" * 256) is None
    assert check_key("a\x00b") is None


def test_the_store_returns_the_first_response_for_a_key() -> None:
    store = IdempotencyStore()
    assert store.max_keys == DEFAULT_MAX_KEYS == 10_000
    assert store.get("k") is None
    store.put("k", stored("one"))
    assert store.get("k") == stored("one")
    assert "k" in store
    assert len(store) == 1


def test_the_store_forgets_the_least_recently_used_key_when_full() -> None:
    store = IdempotencyStore(max_keys=3)
    for key in "abc":
        store.put(key, stored(key))
    assert store.get("a") is not None  # "a" is now the most recently used
    store.put("d", stored("d"))
    assert "b" not in store
    assert [k for k in "acd" if k in store] == ["a", "c", "d"]
    assert len(store) == 3


def test_a_full_default_store_keeps_exactly_ten_thousand_keys() -> None:
    store = IdempotencyStore()
    for i in range(10_001):
        store.put(f"k{i}", stored())
    assert len(store) == 10_000
    assert "k0" not in store
    assert "k10000" in store


def test_a_store_must_hold_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        IdempotencyStore(max_keys=0)


async def test_requests_sharing_a_key_run_one_at_a_time() -> None:
    locks = KeyLocks()
    inside: list[str] = []
    overlaps: list[int] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            inside.append(name)
            overlaps.append(len(inside))
            await asyncio.sleep(0.01)
            inside.remove(name)

    await asyncio.gather(*(work("same", f"w{i}") for i in range(5)))
    assert overlaps == [1, 1, 1, 1, 1]
    assert len(locks) == 0  # unused locks are dropped


async def test_requests_with_different_keys_run_side_by_side() -> None:
    locks = KeyLocks()
    both_inside = asyncio.Event()
    entered = 0

    async def work(key: str) -> None:
        nonlocal entered
        async with locks.hold(key):
            entered += 1
            if entered == 2:
                both_inside.set()
            await asyncio.wait_for(both_inside.wait(), 1.0)

    await asyncio.gather(work("a"), work("b"))
    assert len(locks) == 0


# --- users --------------------------------------------------------------------------------

def test_the_directory_starts_with_three_seeded_users_and_counts_only_new_ones() -> None:
    users = Users()
    assert [u.id for u in users.all()] == [1, 2, 3]
    assert users.created == 0
    user = users.create("Edsger Dijkstra", "edsger@example.com")
    assert user.to_json() == {"id": 4, "name": "Edsger Dijkstra", "email": "edsger@example.com"}
    assert users.created == 1


def test_a_valid_new_user_is_trimmed() -> None:
    assert validate_new_user({"name": " Ada ", "email": " ada@example.com "}) == (
        "Ada", "ada@example.com")


@pytest.mark.parametrize(("body", "field"), [
    (["Ada"], "body"),
    ({"email": "a@b.co"}, "name"),
    ({"name": "  ", "email": "a@b.co"}, "name"),
    ({"name": 5, "email": "a@b.co"}, "name"),
    ({"name": "x" * 101, "email": "a@b.co"}, "name"),
    ({"name": "Ada"}, "email"),
    ({"name": "Ada", "email": "not-an-address"}, "email"),
    ({"name": "Ada", "email": ["a@b.co"]}, "email"),
])
def test_an_invalid_new_user_names_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidUser) as caught:
        validate_new_user(body)
    assert caught.value.field == field


# --- settings -----------------------------------------------------------------------------

def test_settings_default_to_the_original_demo_port_on_all_interfaces() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.control_port) == ("0.0.0.0", 3000, None)
    assert settings.access_log is False
    assert settings.initial_fault == NO_FAULT


def test_settings_read_every_variable() -> None:
    settings = Settings.from_env({"PORT": "8000", "HOST": "127.0.0.1",
                                  "BACKEND_CONTROL_PORT": "8001", "BACKEND_ACCESS_LOG": "true",
                                  "BACKEND_FAULT": "status:502"})
    assert (settings.host, settings.port, settings.control_port) == ("127.0.0.1", 8000, 8001)
    assert settings.access_log is True
    assert settings.initial_fault == FaultSpec(mode=FaultMode.STATUS, status=502)


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PORT": "abc", "BACKEND_CONTROL_PORT": "70000",
                           "BACKEND_ACCESS_LOG": "maybe", "BACKEND_FAULT": "explode",
                           "HOST": " "})
    message = str(caught.value)
    for name in ("PORT", "BACKEND_CONTROL_PORT", "BACKEND_ACCESS_LOG", "BACKEND_FAULT", "HOST"):
        assert name in message
    assert len(caught.value.problems) == 5


def test_an_open_ended_initial_refuse_needs_a_control_port() -> None:
    with pytest.raises(SettingsError, match="BACKEND_FAULT"):
        Settings.from_env({"BACKEND_FAULT": "refuse"})
    settings = Settings.from_env({"BACKEND_FAULT": "refuse", "BACKEND_CONTROL_PORT": "3001"})
    assert settings.initial_fault == FaultSpec(mode=FaultMode.REFUSE)


def test_the_control_port_must_differ_from_the_main_port() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        Settings.from_env({"PORT": "3000", "BACKEND_CONTROL_PORT": "3000"})
