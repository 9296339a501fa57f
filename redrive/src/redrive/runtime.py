"""Process-level plumbing shared by the long-running services: the event loop, GC
tuning and the supervision of background tasks."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def event_loop_name(choice: str) -> str:
    """The loop ``REDRIVE_EVENT_LOOP=choice`` runs on: ``uvloop`` or ``asyncio``."""
    if choice == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``event_loop`` names (see :func:`event_loop_name`).

    uvloop (libuv, used by uvicorn and many asyncio servers) runs the same public asyncio
    API: transports, protocols, timers, signal handlers. The sidecar's front door and both
    HTTP clients are protocols on it, and each request costs about a tenth less CPU than on
    the standard loop (README, Performance).
    """
    if event_loop_name(event_loop) == "uvloop":
        import uvloop  # noqa: PLC0415 - optional, only when chosen

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)

# Young-generation threshold: CPython's default (700) runs a collection every few
# requests on the capture path; cycles are still collected, just in larger batches.
GC_GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int | None = GC_GEN0_THRESHOLD) -> None:
    """Call once start-up is done (modules imported, app built).

    ``gc.freeze`` moves every object alive now (modules, classes, the app) to a permanent
    generation that collections never scan again, so a full collection walks only what
    the traffic allocated. Without it, the occasional full collection over the whole
    start-up heap was the tail of the capture path's latency (see the benchmark notes in
    CHANGELOG.md).

    ``gen0_threshold`` raises the young-generation threshold (None keeps CPython's). The
    retry worker keeps CPython's: with a high threshold its garbage cycles waited for a
    full collection for a whole long run and its RSS kept growing, while the default
    kept it flat at the same replays per CPU second (docs/retry-worker.md).
    """
    gc.collect()
    gc.freeze()
    if gen0_threshold is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


# -- supervision of background tasks

_death_handlers: list[Callable[[str, BaseException | None], None]] = []


def on_task_death(handler: Callable[[str, BaseException | None], None]) -> Callable[[], None]:
    """Call ``handler(name, error)`` whenever a supervised task dies; returns a function
    that removes it. A service installs one that stops the process (see
    :func:`supervise`); without one, a death is only logged."""
    _death_handlers.append(handler)
    return lambda: _death_handlers.remove(handler) if handler in _death_handlers else None


def supervise(task: asyncio.Task[Any], name: str | None = None) -> asyncio.Task[Any]:
    """Watch a background task that should run until it is cancelled.

    If it ends any other way (it raised, or returned while nobody asked it to stop) one
    error line names it, with the traceback, and every handler installed with
    :func:`on_task_death` is called: a dead drain loop or sender must never go unseen.
    Returns ``task``, so ``self._t = supervise(asyncio.create_task(...))`` is a one-line
    change. A task that finishes on purpose should be awaited after :func:`release`.
    """
    label = name or task.get_name()
    task.add_done_callback(lambda t: _reap(t, label))
    return task


def release(task: asyncio.Task[Any]) -> None:
    """Mark a supervised task as allowed to end (before cancelling or stopping it)."""
    _released.add(task)


_released: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def _reap(task: asyncio.Task[Any], name: str) -> None:
    if task.cancelled() or task in _released:
        return
    error = task.exception()
    if error is None:
        log.error("background task ended unexpectedly", extra={"task": name})
    else:
        log.error("background task died", extra={"task": name, "error": repr(error)},
                  exc_info=error)
    for handler in list(_death_handlers):
        handler(name, error)
