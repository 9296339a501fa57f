"""Redrive's demo backend: the original demo's API, with faults switchable at runtime.

It stands in for a user's application behind the sidecar, so it depends on aiohttp and
the standard library only, never on ``redrive``. Start it with ``python -m backend``.
"""

__version__ = "0.1.0"
