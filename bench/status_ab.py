"""A/B: the capture path's rate with and without ``queued`` status records.

Two sidecars in front of a backend that is down (every request is captured and answered
after Kafka's acknowledgement), one with ``REDRIVE_STATUS_RECORDS=false`` (A) and one with
status records on (B), measured with wrk in alternation (A B A B ...) so that the load
others put on the machine hits both alike. Prints each run, the median rates and B/A.
Afterwards it checks that every capture of B got its ``queued`` record on the status topic.

    python bench/status_ab.py [--duration 5] [--pairs 4] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.proxy_bench import pin, wrk  # noqa: E402
from redrive.status import decode_any  # noqa: E402
from tests.support.kafka import read_topic, start_broker, unique_topic  # noqa: E402
from tests.support.metrics import scrape  # noqa: E402
from tests.support.procs import Process, free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="redrive-status-ab-"))
    procs: list[Process] = []
    try:
        broker = start_broker()
        procs.append(broker.process)
        sidecars: dict[str, tuple[int, int, str]] = {}
        for label, records in (("A status off", "false"), ("B status on", "true")):
            port, admin, topic = free_port(), free_port(), unique_topic("ab")
            proc = Process([*pin(0), sys.executable, "-m", "sidecar"], name=label, env={
                "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
                "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_ADMIN_HOST": "127.0.0.1",
                "REDRIVE_LOG_LEVEL": "warning", "REDRIVE_LISTEN_PORT": str(port),
                "REDRIVE_ADMIN_PORT": str(admin), "REDRIVE_STATUS_RECORDS": records,
                "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}"})
            procs.append(proc)
            proc.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=60)
            sidecars[label] = (port, admin, topic)
        time.sleep(1.0)  # let the producers connect
        rates: dict[str, list[float]] = {label: [] for label in sidecars}
        cpu_per_request: dict[str, list[float]] = {label: [] for label in sidecars}
        pids = {p.name: p.pid for p in procs}
        for port, _, _ in sidecars.values():  # warm-up
            wrk(f"http://127.0.0.1:{port}/api/users", duration=1,
                connections=args.connections, post=True, tmp=tmp)
        for i in range(args.pairs):
            order = list(sidecars.items())
            if i % 2:
                order.reverse()
            for label, (port, _, _) in order:
                before = cpu_seconds(pids[label])
                r = wrk(f"http://127.0.0.1:{port}/api/users", duration=args.duration,
                        connections=args.connections, post=True, tmp=tmp)
                rates[label].append(r.rps)
                cpu_per_request[label].append(0.0 if not r.rps else
                    (cpu_seconds(pids[label]) - before) / (r.rps * args.duration) * 1e6)
                print(f"  run {i + 1} {label}: {r.rps:9.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                      f"p99 {r.p99_ms:.2f} ms  errors {r.errors}", flush=True)
        medians = {label: statistics.median(v) for label, v in rates.items()}
        a, b = medians["A status off"], medians["B status on"]
        print(f"median A (status off) {a:.0f}/s, B (status on) {b:.0f}/s, "
              f"B/A = {b / a if a else float('nan'):.3f}")
        pairwise = [rb / ra if ra else float("nan")
                    for ra, rb in zip(rates["A status off"], rates["B status on"], strict=True)]
        print("per-pair B/A: " + ", ".join(f"{x:.3f}" for x in pairwise)
              + f"; median {statistics.median(pairwise):.3f}")
        cpu = {label: statistics.median(v) for label, v in cpu_per_request.items()}
        print(f"sidecar CPU per capture: A {cpu['A status off']:.0f} us, "
              f"B {cpu['B status on']:.0f} us, B/A = "
              f"{cpu['B status on'] / cpu['A status off']:.3f}")
        _, admin_b, topic_b = sidecars["B status on"]
        captured = int(scrape(f"http://127.0.0.1:{admin_b}")[
            'redrive_sidecar_captures_total{result="published"}'])
        status = asyncio.run(read_topic(broker.bootstrap, topic_b + ".status",
                                        timeout=120, idle=5))
        ids = {r.id for _, value, _ in status for r in decode_any(value)}
        print(f"B: {captured} captures, {len(ids)} distinct ids with a queued state in "
              f"{len(status)} status-topic records")
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    main()
