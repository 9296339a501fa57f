"""The worker's settings: one frozen tree built once from ``REDRIVE_*`` variables.

:meth:`Settings.from_env` reports every invalid variable in one
:class:`~redrive.errors.ConfigError`; ``__main__`` turns it into exit code 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from redrive import runtime
from redrive.chunks import DEFAULT_MAX_RECORD_BYTES, MIN_MAX_RECORD_BYTES
from redrive.settings import (
    AdminSettings,
    Env,
    KafkaSettings,
    LogSettings,
    PodIdentity,
    ProcessSettings,
    SecuritySettings,
    ShutdownSettings,
    valid_topic,
)
from retry_worker.status_settings import StatusSettings


@dataclass(frozen=True)
class ConsumerSettings:
    group_id: str = "redrive-retry-worker"
    """Consumer group shared by every worker replica (``REDRIVE_GROUP_ID``)."""
    retry_topic: str = "failed-requests.retry"
    """Where records wait for their next attempt (``REDRIVE_RETRY_TOPIC``; default
    ``<REDRIVE_TOPIC>.retry``). Consumed by the same group as the capture topic."""
    retry_buffer_records: int = 10_000
    """Retry-topic records held in memory while they wait for their due time
    (``REDRIVE_RETRY_BUFFER_RECORDS``). Past it the retry partitions are paused, so memory
    stays bounded; 10,000 records of a few KiB is tens of MiB."""
    session_timeout_seconds: float = 10.0
    """Consumer-group session timeout (``REDRIVE_SESSION_TIMEOUT_SECONDS``): a worker that
    stops heartbeating for this long loses its partitions to the others. aiokafka's default."""
    buffer_bytes: int = 64 * 1_048_576
    """Bytes of records read and not yet started (queued for replay or waiting for their
    due time) before every partition is paused (``REDRIVE_WORKER_BUFFER_BYTES``), so memory
    is bounded by bytes, not only by record counts. A soft bound: one fetch (at most 4 MiB
    a partition) may pass it."""


@dataclass(frozen=True)
class TargetSettings:
    url: str = "http://127.0.0.1:8080"
    """Where every replay goes (``REDRIVE_TARGET_URL``); never a URL taken from a record."""
    connect_timeout_seconds: float = 2.0
    """Longest wait for a TCP connection (``REDRIVE_TARGET_CONNECT_TIMEOUT_SECONDS``)."""
    timeout_seconds: float = 30.0
    """Whole replay exchange (``REDRIVE_TARGET_TIMEOUT_SECONDS``); past it the attempt
    is a retriable ``timeout``. Matches the sidecar's upstream timeout."""


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 8
    """Replays before dead-lettering with ``max_attempts`` (``REDRIVE_MAX_ATTEMPTS``)."""
    max_age_seconds: float = 86_400.0
    """Age (since capture) after which a record is dead-lettered with ``max_age``
    (``REDRIVE_MAX_AGE_SECONDS``); a day by default."""
    backoff_initial_seconds: float = 2.0
    """Delay before the second replay (``REDRIVE_BACKOFF_INITIAL_SECONDS``)."""
    backoff_multiplier: float = 4.0
    """Growth of each later delay (``REDRIVE_BACKOFF_MULTIPLIER``): 2 s, 8 s, 32 s..."""
    backoff_max_seconds: float = 3600.0
    """Cap on one delay, also on an honoured ``Retry-After`` (``REDRIVE_BACKOFF_MAX_SECONDS``)."""
    backoff_jitter: float = 0.2
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    (``REDRIVE_BACKOFF_JITTER``), so records failed together do not retry together."""


@dataclass(frozen=True)
class LimitSettings:
    replay_rate: float = 50.0
    """Replays per second at most, per worker (``REDRIVE_REPLAY_RATE``); 0 turns it off."""
    replay_concurrency: int = 8
    """Replays in flight at most, per worker (``REDRIVE_REPLAY_CONCURRENCY``)."""
    breaker_failures: int = 5
    """Consecutive retriable failures that open the circuit breaker and pause consumption
    (``REDRIVE_BREAKER_FAILURES``); 0 turns the breaker off."""
    breaker_open_seconds: float = 15.0
    """How long the breaker stays open before one probe replay
    (``REDRIVE_BREAKER_OPEN_SECONDS``)."""


DEFAULT_QUARANTINE_DIR = Path("/tmp/redrive-quarantine")  # noqa: S108
"""Under /tmp because the chart mounts an emptyDir there (the root filesystem is
read-only); the directory and its file are created 0700/0600."""


@dataclass(frozen=True)
class RecordSettings:
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """Largest Kafka record the worker produces (retry and dead-letter records), as the
    broker counts it (``REDRIVE_MAX_RECORD_BYTES``); larger ones travel in ordered chunks
    (``redrive.chunks``). Keep it at or below the topics' ``max.message.bytes``."""
    quarantine_dir: Path = DEFAULT_QUARANTINE_DIR
    """Where records Kafka refuses for good (too large, invalid, not authorised) are set
    aside instead of retried forever (``REDRIVE_QUARANTINE_DIR``); list and replay them with
    ``redrive quarantine ... --dir``. Mount a volume there to keep them across restarts."""


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    target: TargetSettings = field(default_factory=TargetSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    admin: AdminSettings = field(default_factory=lambda: AdminSettings(port=9902))
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    log: LogSettings = field(default_factory=LogSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    pod: PodIdentity = field(default_factory=PodIdentity)
    status: StatusSettings = field(default_factory=StatusSettings)
    records: RecordSettings = field(default_factory=RecordSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate. Raises ConfigError naming every invalid variable."""
        env = Env(environ)
        kafka = KafkaSettings.from_env(env)
        consumer = _consumer(env, kafka)
        target = TargetSettings(
            url=env.url("REDRIVE_TARGET_URL", "http://127.0.0.1:8080"),
            connect_timeout_seconds=env.number("REDRIVE_TARGET_CONNECT_TIMEOUT_SECONDS", 2.0,
                                               positive=True),
            timeout_seconds=env.number("REDRIVE_TARGET_TIMEOUT_SECONDS", 30.0, positive=True),
        )
        retry = _retry(env)
        limits = LimitSettings(
            replay_rate=env.number("REDRIVE_REPLAY_RATE", 50.0, minimum=0),
            replay_concurrency=env.integer("REDRIVE_REPLAY_CONCURRENCY", 8, minimum=1,
                                           maximum=10_000),
            breaker_failures=env.integer("REDRIVE_BREAKER_FAILURES", 5, minimum=0),
            breaker_open_seconds=env.number("REDRIVE_BREAKER_OPEN_SECONDS", 15.0,
                                            positive=True),
        )
        admin = AdminSettings.from_env(env, default_port=9902)
        shutdown = ShutdownSettings.from_env(env)
        log = LogSettings.from_env(env)
        process = ProcessSettings.from_env(env)
        security = SecuritySettings.from_env(env)
        pod = PodIdentity.from_env(env)
        status = StatusSettings.from_env(
            env, kafka.topic, (kafka.topic, kafka.dlq_topic, consumer.retry_topic))
        records = RecordSettings(
            max_record_bytes=env.integer("REDRIVE_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES,
                                         minimum=MIN_MAX_RECORD_BYTES,
                                         maximum=64 * 1_048_576),
            quarantine_dir=Path(env.string("REDRIVE_QUARANTINE_DIR",
                                           str(DEFAULT_QUARANTINE_DIR))),
        )
        env.check()
        return cls(kafka=kafka, consumer=consumer, target=target, retry=retry, limits=limits,
                   admin=admin, shutdown=shutdown, log=log, security=security, pod=pod,
                   records=records, status=status, process=process)

    def summary(self) -> dict[str, object]:
        """Effective settings for the startup log line; keys are never included."""
        return {
            "kafka_bootstrap_servers": ",".join(self.kafka.bootstrap_servers),
            "topic": self.kafka.topic,
            "retry_topic": self.consumer.retry_topic,
            "dlq_topic": self.kafka.dlq_topic,
            "group_id": self.consumer.group_id,
            "target_url": self.target.url,
            "max_attempts": self.retry.max_attempts,
            "max_age_seconds": self.retry.max_age_seconds,
            "backoff": [self.retry.backoff_initial_seconds, self.retry.backoff_multiplier,
                        self.retry.backoff_max_seconds, self.retry.backoff_jitter],
            "replay_rate": self.limits.replay_rate,
            "replay_concurrency": self.limits.replay_concurrency,
            "breaker": [self.limits.breaker_failures, self.limits.breaker_open_seconds],
            "admin": f"{self.admin.host}:{self.admin.port}",
            "drain_timeout_seconds": self.shutdown.drain_timeout_seconds,
            **self.status.summary(),
            "max_record_bytes": self.records.max_record_bytes,
            "quarantine_dir": str(self.records.quarantine_dir),
            "event_loop": runtime.event_loop_name(self.process.event_loop),
        }


def _consumer(env: Env, kafka: KafkaSettings) -> ConsumerSettings:
    group = env.string("REDRIVE_GROUP_ID", "redrive-retry-worker")
    retry_topic = env.string("REDRIVE_RETRY_TOPIC", f"{kafka.topic}.retry")
    if not valid_topic(retry_topic):
        env.problem("REDRIVE_RETRY_TOPIC", f"{retry_topic!r} is not a valid Kafka topic name "
                                           "(letters, digits, '.', '_', '-'; at most 249)")
    if retry_topic in (kafka.topic, kafka.dlq_topic):
        env.problem("REDRIVE_RETRY_TOPIC", "must differ from REDRIVE_TOPIC and REDRIVE_DLQ_TOPIC")
    buffer = env.integer("REDRIVE_RETRY_BUFFER_RECORDS", 10_000, minimum=1)
    session = env.number("REDRIVE_SESSION_TIMEOUT_SECONDS", 10.0, minimum=1, maximum=3600)
    buffer_bytes = env.integer("REDRIVE_WORKER_BUFFER_BYTES", 64 * 1_048_576,
                               minimum=1_048_576)
    return ConsumerSettings(group_id=group, retry_topic=retry_topic, retry_buffer_records=buffer,
                            session_timeout_seconds=session, buffer_bytes=buffer_bytes)


def _retry(env: Env) -> RetrySettings:
    retry = RetrySettings(
        max_attempts=env.integer("REDRIVE_MAX_ATTEMPTS", 8, minimum=1),
        max_age_seconds=env.number("REDRIVE_MAX_AGE_SECONDS", 86_400.0, positive=True),
        backoff_initial_seconds=env.number("REDRIVE_BACKOFF_INITIAL_SECONDS", 2.0,
                                           positive=True),
        backoff_multiplier=env.number("REDRIVE_BACKOFF_MULTIPLIER", 4.0, minimum=1),
        backoff_max_seconds=env.number("REDRIVE_BACKOFF_MAX_SECONDS", 3600.0, positive=True),
        backoff_jitter=env.number("REDRIVE_BACKOFF_JITTER", 0.2, minimum=0, maximum=1),
    )
    if retry.backoff_max_seconds < retry.backoff_initial_seconds:
        env.problem("REDRIVE_BACKOFF_MAX_SECONDS",
                    f"{retry.backoff_max_seconds:g} is below REDRIVE_BACKOFF_INITIAL_SECONDS "
                    f"({retry.backoff_initial_seconds:g})")
    elif _tier_count(retry) > MAX_RETRY_TIERS:
        env.problem("REDRIVE_BACKOFF_MULTIPLIER",
                    f"the backoff schedule has more than {MAX_RETRY_TIERS} distinct delays "
                    "(one retry topic each); raise the multiplier or lower the attempts")
    return retry


MAX_RETRY_TIERS = 24
"""Retry tier topics at most (one per distinct delay of the schedule, plus the cap)."""


def _tier_count(retry: RetrySettings) -> int:
    delays = {retry.backoff_max_seconds}
    delay = retry.backoff_initial_seconds
    for _ in range(1, retry.max_attempts):
        if delay >= retry.backoff_max_seconds or len(delays) > MAX_RETRY_TIERS:
            break
        delays.add(delay)
        delay *= retry.backoff_multiplier
    return len(delays)


def target_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a base URL; the origin every replay must stay on."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port
