"""Injector metrics: admissions by outcome, certificate expiry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("injected", "skipped", "refused", "error")


class InjectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.admissions = Counter(
            "admissions", "Admission reviews answered, by outcome", ["outcome"],
            namespace="redrive", subsystem="injector", registry=registry)
        for outcome in OUTCOMES:
            self.admissions.labels(outcome=outcome)
        self.certificate_expiry = Gauge(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            namespace="redrive", subsystem="injector", registry=registry)
