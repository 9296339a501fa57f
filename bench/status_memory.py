"""What the worker's status view costs per tracked request: apply N records, measure RSS.

    python bench/status_memory.py [--requests 1000000]

Prints the resident-memory growth of the process, per request and per million, with the
console's recent set (10,000 full records) included as the worker runs it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redrive.envelope import new_id
from redrive.status import StatusRecord
from retry_worker.status_store import StatusView


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    n = ap.parse_args().requests
    ids = [new_id() for _ in range(n)]
    gc.collect()
    view = StatusView(max_tracked=n)
    before = rss_bytes()
    started = time.perf_counter()
    now = time.time()
    for i, rid in enumerate(ids):
        view.apply(StatusRecord(id=rid, state="delivered", attempts=1, updated_at=now + i,
                                captured_at=now, response=201, method="POST",
                                path="/api/users", source="shop/api-7d9f-x2x",
                                attempt={"at": now, "status": 201, "duration_seconds": 0.01}))
    took = time.perf_counter() - started
    gc.collect()
    grown = rss_bytes() - before
    print(f"{n} tracked requests: RSS +{grown / 2**20:.0f} MiB "
          f"({grown / n:.0f} bytes a request, {grown / n * 1e6 / 2**20:.0f} MiB a million); "
          f"applied at {n / took:,.0f} records/s")


if __name__ == "__main__":
    main()
