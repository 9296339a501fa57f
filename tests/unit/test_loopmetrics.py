"""The loop-owned metric families expose exactly what prometheus_client's Counter and
Histogram expose for the same updates."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from redrive.loopmetrics import LoopCounterFamily, LoopHistogramFamily
from redrive.metrics import LATENCY_BUCKETS


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def test_counters_and_histograms_read_as_prometheus_clients_own() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    kw = {"namespace": "redrive", "subsystem": "sidecar"}
    a = LoopCounterFamily("requests", "Requests.", ["outcome"], registry=ours, **kw)
    b = Counter("requests", "Requests.", ["outcome"], registry=theirs, **kw)
    plain_a = LoopCounterFamily("drained", "Drained.", registry=ours, **kw)
    plain_b = Counter("drained", "Drained.", registry=theirs, **kw)
    ha = LoopHistogramFamily("duration_seconds", "Seconds.", registry=ours,
                             buckets=LATENCY_BUCKETS, **kw)
    hb = Histogram("duration_seconds", "Seconds.", registry=theirs, buckets=LATENCY_BUCKETS,
                   **kw)
    for outcome in ("proxied", "queued", "lost"):
        a.labels(outcome=outcome)
        b.labels(outcome=outcome)
    rng = random.Random(7)
    for _ in range(5000):
        outcome = rng.choice(["proxied", "queued"])
        a.labels(outcome=outcome).inc()
        b.labels(outcome=outcome).inc()
        a.labels(outcome).inc(2)
        b.labels(outcome).inc(2)
        value = rng.choice([rng.expovariate(200), *LATENCY_BUCKETS, 99.0, 0.0])
        ha.observe(value)
        hb.observe(value)
    plain_a.inc(5)
    plain_b.inc(5)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("redrive_sidecar_requests_total", {"outcome": "lost"}) == 0


def test_misuse_is_refused_clearly() -> None:
    family = LoopCounterFamily("x", "X.", ["kind"])
    with pytest.raises(ValueError, match="only goes up"):
        family.labels(kind="a").inc(-1)
    with pytest.raises(ValueError, match="takes the labels kind"):
        family.labels(other="a")
    with pytest.raises(ValueError, match="has labels"):
        family.inc()
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogramFamily("h", "H.", buckets=[1.0, 0.5])
