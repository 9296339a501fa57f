"""Spool drain throughput to the local broker (issue 11's target: at least 10,000
records/s from a 100,000-record spool).

    .venv/bin/python bench/drain_bench.py [--records 100000] [--value-bytes 1000] [--runs 3]
                                          [--window 4096] [--compare-window 1]

Each run fills a fresh spool (real fsync, in a temporary directory; ``--dir`` picks where),
starts a fresh Tansu broker on loopback, and times ``sidecar.drain.drain_spool`` until
the spool is empty. ``--compare-window N`` interleaves runs that hand the publisher N
records at a time (1 = the old one-await-per-record drain) on a tenth of the records,
so the ratio is measured under the same machine load. Prints one JSON line per run and
the medians last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from prometheus_client import CollectorRegistry

from redrive.kafka import Publisher
from redrive.settings import KafkaSettings
from sidecar.drain import drain_spool
from sidecar.metrics import SidecarMetrics
from sidecar.spool import Spool
from tests.support.kafka import start_broker, unique_topic


async def fill(spool: Spool, n: int, value_bytes: int) -> None:
    value = b"x" * value_bytes
    headers = [("redrive-version", b"1")]
    batch = 512
    for start in range(0, n, batch):
        await asyncio.gather(*(spool.append(f"id-{i:08d}".encode(), value, headers)
                               for i in range(start, min(n, start + batch))))


async def one_run(directory: Path, bootstrap: str, records: int, value_bytes: int,
                  window: int, keyed: bool = False) -> dict[str, float]:
    spool = Spool(directory, 8 << 30, window_records=window)
    spool.open()
    await fill(spool, records, value_bytes)
    topic = unique_topic("drainbench")
    # As the sidecar publishes its capture topic: sticky partitions (spread_topics).
    pub = Publisher(KafkaSettings(bootstrap_servers=(bootstrap,), topic=topic),
                    client_id="bench", spread_topics=() if keyed else {topic})
    await pub.start()
    assert await pub.wait_connected(20)
    metrics = SidecarMetrics(CollectorRegistry())
    started = time.perf_counter()
    done = 0
    while spool.records:
        done += await drain_spool(spool, pub, metrics, topic=topic)
    took = time.perf_counter() - started
    await pub.stop()
    await spool.close()
    return {"window": window, "records": done, "seconds": round(took, 3),
            "records_per_second": round(done / took)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--compare-window", type=int, default=0)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--keyed", action="store_true",
                        help="partition by key (the capture topic is a spread topic)")
    args = parser.parse_args()
    rates: dict[int, list[float]] = {}
    for _ in range(args.runs):
        plan = [(args.window, args.records)]
        if args.compare_window:
            plan.append((args.compare_window, max(1000, args.records // 10)))
        for window, n in plan:
            broker = start_broker()
            try:
                with tempfile.TemporaryDirectory(dir=args.dir) as d:
                    result = await one_run(Path(d), broker.bootstrap, n, args.value_bytes,
                                           window, args.keyed)
            finally:
                broker.process.stop()
            print(json.dumps(result), flush=True)
            rates.setdefault(window, []).append(result["records_per_second"])
    print(json.dumps({f"median_records_per_second_window_{w}": statistics.median(v)
                      for w, v in rates.items()}))


if __name__ == "__main__":
    asyncio.run(main())
