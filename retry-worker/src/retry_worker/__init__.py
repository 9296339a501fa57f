"""Redrive retry worker: replays captured requests to the service once it recovers.

``python -m retry_worker`` consumes the capture topic in a consumer group, replays each
record to ``REDRIVE_TARGET_URL`` under a rate limit, a concurrency limit and a circuit
breaker, parks retriable failures on a retry topic until their backoff is due, and
dead-letters what cannot or must not be replayed. See docs/retry-worker.md.
"""
