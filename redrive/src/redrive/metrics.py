"""Metric conventions shared by the sidecar and the retry worker.

Latency histograms in both components use the same buckets so dashboards and alerts can
compare them and one set of percentiles covers the whole pipeline.
"""

from __future__ import annotations

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0)
"""0.5 ms to 30 s, in seconds: loopback hits sit in the first buckets, timeouts in the last."""
