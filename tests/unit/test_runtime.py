"""GC tuning done once at start-up."""

from __future__ import annotations

import gc

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
