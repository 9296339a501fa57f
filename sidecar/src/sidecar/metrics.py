"""The sidecar's Prometheus metrics (names fixed by the public contract).

Created once per process with a registry (a fresh one per test). Label values are
bounded and every known series is created at zero, so dashboards and alerts see a
series before its first event. Hot-path children are bound once, here.

The five metrics every request or capture updates (requests, upstream failures,
captures, and the two latency histograms) are :mod:`redrive.loopmetrics` families:
plain numbers owned by the event loop, read at scrape time, same exposition.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from redrive.kafka import PERMANENT_REASONS
from redrive.loopmetrics import LoopCounterFamily, LoopHistogramFamily
from redrive.metrics import LATENCY_BUCKETS
from sidecar.failures import KINDS

__all__ = ["LATENCY_BUCKETS", "OUTCOMES", "RESULTS", "SidecarMetrics"]

OUTCOMES = ("proxied", "queued", "not_queued", "replay_failed", "not_captured", "rejected",
            "overloaded")
"""proxied: the upstream's answer was passed on; queued / not_queued: a failure was
captured and made safe / could not be; replay_failed: a replay (never captured) whose
upstream failed without an answer; not_captured: the same for a request the capture
policy leaves out (method, path); rejected: refused before forwarding (400, 408, 413,
431, ...); overloaded: refused with 503 ``queued: false`` because its body would pass
the buffered-body budget (``REDRIVE_BUFFERED_BODY_MAX_BYTES``)."""
RESULTS = ("published", "spooled", "lost")


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns, sub = "redrive", "sidecar"
        self.requests = LoopCounterFamily("requests", "Requests handled by the proxy, by outcome.",
                                ["outcome"], namespace=ns, subsystem=sub, registry=registry)
        self.upstream_failures = LoopCounterFamily(
            "upstream_failures", "Upstream exchanges that failed, by failure kind.",
            ["kind"], namespace=ns, subsystem=sub, registry=registry)
        self.captures = LoopCounterFamily(
            "captures", "Captured requests by where they were made safe "
            "(published to Kafka, spooled to disk) or lost.",
            ["result"], namespace=ns, subsystem=sub, registry=registry)
        self.spool_records = Gauge("spool_records", "Records waiting in the on-disk spool.",
                                   namespace=ns, subsystem=sub, registry=registry)
        self.spool_bytes = Gauge("spool_bytes", "Size of the on-disk spool in bytes.",
                                 namespace=ns, subsystem=sub, registry=registry)
        self.spool_oldest_age = Gauge(
            "spool_oldest_record_age_seconds",
            "Age of the oldest spooled record in seconds (0 if empty).",
            namespace=ns, subsystem=sub, registry=registry)
        self.spool_drained = Counter(
            "spool_drained_records", "Spooled records published to Kafka by the drain.",
            namespace=ns, subsystem=sub, registry=registry)
        self.spool_quarantined_bytes = Counter(
            "spool_quarantined_bytes", "Bytes of torn or corrupt spool data set aside at start.",
            namespace=ns, subsystem=sub, registry=registry)
        self.upstream_duration = LoopHistogramFamily(
            "upstream_request_duration_seconds",
            "Seconds from sending a request upstream to its response headers (or failure).",
            namespace=ns, subsystem=sub, registry=registry, buckets=LATENCY_BUCKETS)
        self.publish_duration = LoopHistogramFamily(
            "publish_duration_seconds", "Seconds for Kafka to acknowledge a captured record.",
            namespace=ns, subsystem=sub, registry=registry, buckets=LATENCY_BUCKETS)
        self.quarantined = Counter(
            "quarantined_records", "Records Kafka refused for good (too large, invalid, "
            "not authorised), moved to the quarantine file instead of retried forever.",
            ["reason"], namespace=ns, subsystem=sub, registry=registry)
        self.buffered_body_bytes = Gauge(
            "buffered_body_bytes", "Bytes of request bodies held by requests in progress "
            "(counted against REDRIVE_BUFFERED_BODY_MAX_BYTES).",
            namespace=ns, subsystem=sub, registry=registry)
        self.kafka_connected = Gauge(
            "kafka_connected", "1 when the producer is connected to Kafka, else 0.",
            namespace=ns, subsystem=sub, registry=registry)

        for outcome in OUTCOMES:
            self.requests.labels(outcome=outcome)
        for kind in KINDS:
            self.upstream_failures.labels(kind=kind)
        for result in RESULTS:
            self.captures.labels(result=result)
        for reason in PERMANENT_REASONS:
            self.quarantined.labels(reason=reason)
