"""The worker's Prometheus metrics, defined once against a registry passed in.

Label values are bounded (outcome, reason, topic); every known combination is created at
start so dashboards see zeros instead of missing series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from redrive.deadletter import REASONS
from redrive.kafka import PERMANENT_REASONS
from redrive.metrics import LATENCY_BUCKETS
from retry_worker.policy import Verdict

REJECT_REASONS = ("malformed", "unsigned", "forged")
"""Why a record was refused before any replay: undecodable, or failing the signature check."""
DURATION_BUCKETS = LATENCY_BUCKETS
"""Replay durations use the shared 0.5 ms to 30 s latency buckets (as the sidecar does)."""


class Metrics:
    def __init__(self, registry: CollectorRegistry, topics: tuple[str, ...] = ()) -> None:
        ns, sub = "redrive", "retry_worker"
        self.replays = Counter(
            "replays", "Replay attempts by outcome: success, retriable, permanent.",
            ["outcome"], namespace=ns, subsystem=sub, registry=registry)
        self.dead_letters = Counter(
            "dead_letters", "Records written to the dead-letter topic, by reason.",
            ["reason"], namespace=ns, subsystem=sub, registry=registry)
        self.rejected = Counter(
            "rejected_records", "Records refused before any replay (not a valid record).",
            ["reason"], namespace=ns, subsystem=sub, registry=registry)
        self.retries_scheduled = Counter(
            "retries_scheduled", "Records re-published to the retry topic for a later attempt.",
            namespace=ns, subsystem=sub, registry=registry)
        self.replay_duration = Histogram(
            "replay_duration_seconds", "Seconds taken by one replay attempt, answered or not.",
            namespace=ns, subsystem=sub, registry=registry, buckets=DURATION_BUCKETS)
        self.in_flight = Gauge(
            "replays_in_flight", "Replays started and not yet finished.",
            namespace=ns, subsystem=sub, registry=registry)
        self.waiting = Gauge(
            "waiting_records", "Retry-topic records held until their due time.",
            namespace=ns, subsystem=sub, registry=registry)
        self.buffered_bytes = Gauge(
            "buffered_bytes", "Bytes of records read and not yet started (queued or waiting).",
            namespace=ns, subsystem=sub, registry=registry)
        self.breaker_open = Gauge(
            "circuit_open", "1 while the circuit breaker holds replays back, else 0.",
            namespace=ns, subsystem=sub, registry=registry)
        self.lag = Gauge(
            "consumer_lag_records",
            "Records on this worker's assigned partitions not yet committed, by topic.",
            ["topic"], namespace=ns, subsystem=sub, registry=registry)
        self.quarantined = Counter(
            "quarantined_records", "Retry or dead-letter records Kafka refused for good "
            "(too large, invalid, not authorised), moved to the quarantine file.",
            ["reason"], namespace=ns, subsystem=sub, registry=registry)
        for reason in PERMANENT_REASONS:
            self.quarantined.labels(reason)
        for verdict in Verdict:
            self.replays.labels(verdict.value)
        for reason in REASONS:
            self.dead_letters.labels(reason)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for topic in topics:
            self.lag.labels(topic)
