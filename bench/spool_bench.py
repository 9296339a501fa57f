"""Spool append throughput and latency with real fsync (issue 3's target: at least 5,000
appends/s at 64 concurrent appenders, p99 under 20 ms).

    .venv/bin/python bench/spool_bench.py [--concurrency 64] [--seconds 3] [--runs 3]

Each run uses a fresh spool in a temporary directory (``--dir`` picks where: put it on
the disk you care about, not a tmpfs) and reports appends/s and latency percentiles; the
last line is the median of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sidecar.spool import Spool


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


async def one_run(directory: Path, concurrency: int, seconds: float,
                  value_bytes: int) -> dict[str, float]:
    spool = Spool(directory, 8 << 30)
    spool.open()
    value = b"x" * value_bytes
    headers = [("redrive-version", b"1")]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def appender(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await spool.append(f"{n}-{i}".encode(), value, headers)
            latencies.append(time.perf_counter() - start)
            i += 1

    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:  # proves each batch really reaches the disk
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    os.fsync = counting_fsync
    try:
        began = time.perf_counter()
        await asyncio.gather(*(appender(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        os.fsync = real_fsync
    await spool.close()
    latencies.sort()
    return {"appends_per_second": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 0.50) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3,
            "max_ms": latencies[-1] * 1e3,
            "appends": len(latencies),
            "fsyncs_per_second": fsyncs / elapsed,
            "appends_per_fsync": len(latencies) / max(fsyncs, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--value-bytes", type=int, default=1024,
                        help="record value size (a captured request's JSON)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the spool dirs")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="spool-bench-", dir=args.dir) as tmp:
            result = asyncio.run(one_run(Path(tmp), args.concurrency, args.seconds,
                                         args.value_bytes))
        results.append(result)
        print(json.dumps({"run": run + 1, **{k: round(v, 2) for k, v in result.items()}}))
    median = {k: round(statistics.median(r[k] for r in results), 2) for k in results[0]}
    print(json.dumps({"median_of": args.runs, "concurrency": args.concurrency,
                      "value_bytes": args.value_bytes, **median}))


if __name__ == "__main__":
    main()
