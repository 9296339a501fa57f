"""Retry-worker throughput and memory benchmark (not a test).

Starts the embedded broker (Tansu, in memory) on loopback, fills a capture topic with N
records, then starts ``python -m retry_worker`` with the limits off (rate 0, breaker off)
against a fast aiohttp target living in this process, and measures:

* replays per second, from the target's side (first to last replay request),
* the worker's resident memory (VmRSS) sampled every second: it should stay flat.

    .venv/bin/python bench/worker_bench.py --records 100000

Everything binds 127.0.0.1; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer

from redrive.envelope import KAFKA_HEADERS, Failure, Record, encode, new_id
from redrive.localbroker import broker_command

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def record(i: int) -> Record:
    rid = new_id()
    return Record(id=rid, timestamp=time.time(), method="POST", uri=f"/api/items?n={i}",
                  headers={"content-type": "application/json", "x-request-id": str(i)},
                  body=json.dumps({"n": i, "pad": "x" * 200}).encode(),
                  error=Failure(kind="connect_refused", reached_upstream=False),
                  idempotency_key=rid)


async def fill(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    start = time.monotonic()
    try:
        pending = []
        for i in range(n):
            r = record(i)
            pending.append(await producer.send(topic, encode(r), key=r.id.encode(),
                                               headers=list(KAFKA_HEADERS)))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - start


async def bench(n: int, concurrency: int, timeout: float,
                extra_env: dict[str, str] | None = None) -> dict[str, object]:
    broker_port, target_port, admin_port = free_port(), free_port(), free_port()
    logs = tempfile.mkdtemp(prefix="redrive-bench-")
    broker_log = open(Path(logs) / "broker.log", "wb")  # noqa: SIM115, ASYNC230
    broker = subprocess.Popen(broker_command("127.0.0.1", broker_port), stdout=broker_log,  # noqa: ASYNC220
                              stderr=subprocess.STDOUT)
    worker: subprocess.Popen[bytes] | None = None
    runner: web.AppRunner | None = None
    try:
        wait_port(broker_port)
        bootstrap = f"127.0.0.1:{broker_port}"
        topic = f"bench-{new_id()[:8]}"
        fill_seconds = await fill(bootstrap, topic, n)

        times: list[float] = []

        async def fast(_: web.Request) -> web.Response:
            times.append(time.monotonic())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fast)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", target_port, backlog=1024).start()

        env = {k: v for k, v in os.environ.items() if not k.startswith("REDRIVE_")}
        env.update({
            "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDRIVE_TOPIC": topic,
            "REDRIVE_TARGET_URL": f"http://127.0.0.1:{target_port}",
            "REDRIVE_REPLAY_RATE": "0", "REDRIVE_REPLAY_CONCURRENCY": str(concurrency),
            "REDRIVE_BREAKER_FAILURES": "0", "REDRIVE_ADMIN_HOST": "127.0.0.1",
            "REDRIVE_ADMIN_PORT": str(admin_port), "REDRIVE_LOG_LEVEL": "warning",
            "REDRIVE_STATUS_HOST": "127.0.0.1", "REDRIVE_STATUS_PORT": str(free_port()),
            "REDRIVE_SESSION_TIMEOUT_SECONDS": "2", "POD_NAME": "bench"})
        env.update(extra_env or {})
        worker_log = open(Path(logs) / "worker.log", "wb")  # noqa: SIM115, ASYNC230
        worker = subprocess.Popen([sys.executable, "-m", "retry_worker"], env=env,  # noqa: ASYNC220
                                  stdout=worker_log, stderr=subprocess.STDOUT, cwd=REPO)
        rss: list[tuple[float, int]] = []
        start = time.monotonic()
        while len(times) < n:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited {worker.returncode}; see {logs}")
            if time.monotonic() - start > timeout:
                break
            rss.append((round(time.monotonic() - start, 1), rss_kib(worker.pid)))
            await asyncio.sleep(1.0)
        rss.append((round(time.monotonic() - start, 1), rss_kib(worker.pid)))
        worker_cpu = cpu_seconds(worker.pid)
        replayed = len(times)
        span = times[-1] - times[0] if replayed > 1 else float("nan")
        # Memory after warm-up (first 10% of the run) vs the end: "flat" means no growth.
        warm = [kib for t, kib in rss if times and t >= 0.1 * (times[-1] - start)] or \
            [kib for _, kib in rss]
        return {
            "records": n, "replayed": replayed, "concurrency": concurrency,
            "fill_seconds": round(fill_seconds, 1),
            "replay_seconds": round(span, 2),
            "replays_per_second": round((replayed - 1) / span) if replayed > 1 else 0,
            # The worker is one process on one core; this is its rate per second of CPU
            # (start-up included), independent of the broker and target sharing the machine.
            "worker_cpu_seconds": round(worker_cpu, 1),
            "replays_per_worker_cpu_second": round(replayed / worker_cpu) if worker_cpu else 0,
            "rss_mib_after_warmup_min": round(min(warm) / 1024, 1),
            "rss_mib_after_warmup_max": round(max(warm) / 1024, 1),
            "rss_mib_end": round(rss[-1][1] / 1024, 1),
            "rss_samples_mib": [(t, round(k / 1024, 1)) for t, k in rss[:: max(1, len(rss) // 12)]],
            "rss_all": rss,  # (seconds, KiB) every second, for bench/memory_bench.py
            "logs": logs,
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=5)
        if runner is not None:
            await runner.cleanup()
        broker.terminate()
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up after this many seconds of replaying")
    parser.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="the worker's REDRIVE_EVENT_LOOP")
    args = parser.parse_args()
    result = asyncio.run(bench(args.records, args.concurrency, args.timeout,
                               extra_env={"REDRIVE_EVENT_LOOP": args.event_loop}))
    result["event_loop"] = args.event_loop
    result.pop("rss_all")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
