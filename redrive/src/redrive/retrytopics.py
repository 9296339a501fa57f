"""Names of the retry tier topics: ``<REDRIVE_RETRY_TOPIC>.<delay>``, one per fixed delay.

A record waiting for its next attempt goes to the tier of its delay (``2s``, ``8s``,
``32s``, ... ``3600s`` with the default backoff; sub-second delays are named in ``ms``).
Within one tier every record waits the same time, so due times grow with offsets and the
worker can pause a partition until its head is due and commit exactly behind it.
"""

from __future__ import annotations


def tier_label(delay_seconds: float) -> str:
    """``2s``, ``3600s``, ``100ms``: whole seconds when exact, else milliseconds."""
    ms = max(1, round(delay_seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def tier_topic(retry_topic: str, delay_seconds: float) -> str:
    return f"{retry_topic}.{tier_label(delay_seconds)}"
