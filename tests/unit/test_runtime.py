"""GC tuning done once at start-up, and the supervision of background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from redrive import runtime


def test_tune_gc_freezes_the_start_up_heap_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        runtime.tune_gc()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold()[0] == runtime.GC_GEN0_THRESHOLD
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_supervised_task_that_raises_is_logged_and_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    deaths: list[tuple[str, BaseException | None]] = []
    remove = runtime.on_task_death(lambda name, exc: deaths.append((name, exc)))
    try:
        async def boom() -> None:
            raise RuntimeError("drain broke")

        task = runtime.supervise(asyncio.create_task(boom(), name="spool-drain"))
        with contextlib.suppress(RuntimeError):
            await task
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    finally:
        remove()
    assert [(name, str(exc)) for name, exc in deaths] == [("spool-drain", "drain broke")]
    [line] = [r for r in caplog.records if r.getMessage() == "background task died"]
    assert line.levelname == "ERROR" and line.task == "spool-drain"  # type: ignore[attr-defined]
    assert line.exc_info is not None


async def test_a_supervised_task_that_returns_is_a_death_too() -> None:
    deaths: list[str] = []
    remove = runtime.on_task_death(lambda name, _exc: deaths.append(name))
    try:
        async def quits() -> None:
            return None

        await runtime.supervise(asyncio.create_task(quits()), "sender")
        await asyncio.sleep(0)
    finally:
        remove()
    assert deaths == ["sender"]


async def test_cancelled_or_released_tasks_are_not_deaths() -> None:
    deaths: list[str] = []
    remove = runtime.on_task_death(lambda name, _exc: deaths.append(name))
    try:
        cancelled = runtime.supervise(asyncio.create_task(asyncio.sleep(10)), "a")
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled

        async def finishes() -> None:
            await asyncio.sleep(0)

        released = runtime.supervise(asyncio.create_task(finishes()), "b")
        runtime.release(released)
        await released
        await asyncio.sleep(0)
    finally:
        remove()
    assert deaths == []


async def test_a_publisher_whose_connect_loop_dies_is_reported_not_left_running() -> None:
    # aiokafka raises RuntimeError from its constructor when the configured compression
    # library is missing: not a connection problem to retry, a dead connect loop.
    from redrive.kafka import Publisher
    from redrive.settings import KafkaSettings

    def broken_factory(**_options: object) -> object:
        raise RuntimeError("Compression library for zstd not found")

    deaths: list[tuple[str, BaseException | None]] = []
    remove = runtime.on_task_death(lambda name, exc: deaths.append((name, exc)))
    publisher = Publisher(KafkaSettings(), client_id="t",
                          producer_factory=broken_factory)  # type: ignore[arg-type]
    try:
        await publisher.start()
        for _ in range(100):
            if deaths:
                break
            await asyncio.sleep(0.01)
        assert [name for name, _ in deaths] == ["kafka-connect"]
        assert isinstance(deaths[0][1], RuntimeError)
    finally:
        remove()
        await publisher.stop(timeout=1)


async def test_a_publisher_stopped_on_purpose_reports_no_death() -> None:
    from redrive.kafka import Publisher
    from redrive.settings import KafkaSettings

    deaths: list[str] = []
    remove = runtime.on_task_death(lambda name, _exc: deaths.append(name))
    publisher = Publisher(KafkaSettings(bootstrap_servers=("127.0.0.1:1",)), client_id="t")
    try:
        await publisher.start()
        await asyncio.sleep(0.05)
        await publisher.stop(timeout=1)
        await asyncio.sleep(0.05)
        assert deaths == []
    finally:
        remove()


@pytest.mark.parametrize(("choice", "module"), [("uvloop", "uvloop"), ("auto", "uvloop"),
                                                ("asyncio", "asyncio")])
def test_run_runs_on_the_loop_chosen(choice: str, module: str) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert runtime.event_loop_name(choice) == module
    assert runtime.run(which(), choice) == module
