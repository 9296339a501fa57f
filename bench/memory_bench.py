"""Memory benchmark (not a test): is the resident memory of the services flat under load?

Two runs, each sampling the process's VmRSS every second and printing start, peak and end
RSS and the slope over the second half (least squares, MiB per minute; "flat" is a slope
near 0 once warm):

* ``worker``: ``bench/worker_bench.py``'s run: N records (default 100,000) on a topic of
  the local broker, replayed by ``python -m retry_worker`` to a fast in-process target.
* ``sidecar``: the sidecar's capture path under ``wrk`` (``make bench-tools``) for
  ``--duration`` seconds (default 600): POSTs with a JSON body to a sidecar whose app is
  down (connection refused), so every request is captured and answered after Kafka's
  acknowledgement. Sidecar on CPU 0, wrk and the broker on CPU 1 (when taskset exists).
  The broker (Tansu, in memory) keeps every record: about 1 GB per 3 minutes here.
* ``gc-ab``: the sidecar's GC setting, interleaved A/B: rounds of ``--ab-seconds`` wrk
  runs alternating the sidecar's gen0 threshold (``--gc-thresholds``, 0 = CPython's
  default), each on a fresh sidecar; prints requests per sidecar CPU-second, RSS, and the
  ratios (absolute numbers mean little on a shared machine).

``--gc-threshold N`` starts the sidecar with ``runtime.tune_gc(gen0_threshold=N)``
(0 = CPython's default) instead of its built-in setting, through a tiny wrapper: the
product has no knob for it.

    .venv/bin/python bench/memory_bench.py worker --records 100000
    .venv/bin/python bench/memory_bench.py sidecar --duration 600
    .venv/bin/python bench/memory_bench.py gc-ab --rounds 3 --ab-seconds 20

Everything binds 127.0.0.1; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import worker_bench  # noqa: E402

from redrive.localbroker import broker_command  # noqa: E402
from tests.support.procs import free_port, refused_port, wait_for_port  # noqa: E402

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    return worker_bench.rss_kib(pid) * 1024


def slope_mib_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over the second half of the run, MiB per minute."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return float("nan")
    ts = [t for t, _ in half]
    ys = [b / MIB for _, b in half]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return float("nan")
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var * 60


def summary(samples: list[tuple[float, int]]) -> dict[str, object]:
    samples = [(t, b) for t, b in samples if b > 10 * MIB]  # the process still starting
    rss = [b for _, b in samples]
    return {"samples": len(samples), "rss_start_mib": round(rss[0] / MIB, 1),
            "rss_peak_mib": round(max(rss) / MIB, 1), "rss_end_mib": round(rss[-1] / MIB, 1),
            "slope_second_half_mib_per_min": round(slope_mib_per_minute(samples), 2),
            "rss_every_tenth_mib": [(round(t), round(b / MIB, 1)) for t, b in
                                    samples[:: max(1, len(samples) // 10)]]}


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def sidecar_command(gc_threshold: int | None) -> list[str]:
    if gc_threshold is None:
        return [sys.executable, "-m", "sidecar"]
    value = "None" if gc_threshold == 0 else str(gc_threshold)
    wrapper = ("import functools, runpy; from redrive import runtime; "
               f"runtime.tune_gc = functools.partial(runtime.tune_gc, gen0_threshold={value}); "
               "runpy.run_module('sidecar', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", wrapper]


class Sampler:
    """VmRSS of ``pid`` every ``every`` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic() - self._start, rss_bytes(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Stack:
    """A broker and a sidecar whose app is down, both on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.broker_port = free_port()
        self.broker = subprocess.Popen(
            [*pin(1), *broker_command("127.0.0.1", self.broker_port)],
            stdout=open(tmp / "broker.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_for_port(self.broker_port)
        self.topic = f"membench-{os.getpid()}-{int(time.time())}"
        self.sidecar: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start_sidecar(self, gc_threshold: int | None) -> subprocess.Popen[bytes]:
        self.stop_sidecar()
        self.port, admin = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDRIVE_")}
        env.update({
            "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.broker_port}",
            "REDRIVE_TOPIC": self.topic, "REDRIVE_DLQ_TOPIC": self.topic + ".dlq",
            "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{refused_port()}",
            "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_LISTEN_PORT": str(self.port),
            "REDRIVE_ADMIN_HOST": "127.0.0.1", "REDRIVE_ADMIN_PORT": str(admin),
            "REDRIVE_LOG_LEVEL": "warning", "POD_NAME": "membench", "POD_NAMESPACE": "bench"})
        self.sidecar = subprocess.Popen(
            [*pin(0), *sidecar_command(gc_threshold)], env=env, cwd=REPO,
            stdout=open(self.tmp / "sidecar.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_for_port(self.port, timeout=30)
        time.sleep(2.0)  # the producer connects
        return self.sidecar

    def stop_sidecar(self) -> None:
        if self.sidecar is not None:
            stop(self.sidecar, timeout=30)
        self.sidecar = None

    def close(self) -> None:
        self.stop_sidecar()
        stop(self.broker, timeout=10)


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds (a process we started)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wrk(port: int, seconds: int, connections: int, body_bytes: int, tmp: Path) -> float:
    """Run wrk POSTing JSON to the sidecar; returns the number of requests it completed."""
    script = tmp / "post.lua"
    body = '{"name": "' + "x" * max(0, body_bytes - 12) + '"}'
    script.write_text(f"wrk.method = \"POST\"\nwrk.body = '{body}'\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(
        [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}/api/items"],
        capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    done = re.search(r"(\d+) requests in", out)
    return float(done.group(1)) if done else 0.0


def run_sidecar(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="redrive-membench-"))
    stack = Stack(tmp)
    try:
        proc = stack.start_sidecar(args.gc_threshold)
        cpu0 = worker_bench.cpu_seconds(proc.pid)
        with Sampler(proc.pid) as sampler:
            requests = wrk(stack.port, args.duration, args.connections, args.body_bytes, tmp)
        cpu = worker_bench.cpu_seconds(proc.pid) - cpu0
        return {"duration_seconds": args.duration, "requests": int(requests),
                "requests_per_sidecar_cpu_second": round(requests / cpu) if cpu else 0,
                "gc_threshold": args.gc_threshold if args.gc_threshold is not None
                else "built-in", **summary(sampler.samples), "logs": str(tmp)}
    finally:
        stack.close()


def run_gc_ab(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="redrive-membench-"))
    stack = Stack(tmp)
    thresholds = [int(t) for t in args.gc_thresholds.split(",")]
    per: dict[int, list[tuple[float, float, float]]] = {t: [] for t in thresholds}
    try:
        for _ in range(args.rounds):
            for t in thresholds:
                proc = stack.start_sidecar(t)
                cpu0 = worker_bench.cpu_seconds(proc.pid)
                with Sampler(proc.pid) as sampler:
                    requests = wrk(stack.port, args.ab_seconds, args.connections,
                                   args.body_bytes, tmp)
                cpu = worker_bench.cpu_seconds(proc.pid) - cpu0
                peak = max(b for _, b in sampler.samples) / MIB
                per[t].append((requests / cpu if cpu else 0.0, requests / args.ab_seconds,
                               peak))
                stack.stop_sidecar()
    finally:
        stack.close()
    out: dict[str, object] = {"rounds": args.rounds, "seconds_each": args.ab_seconds}
    base = statistics.median(r[0] for r in per[thresholds[0]])
    for t in thresholds:
        name = "default" if t == 0 else str(t)
        per_cpu = statistics.median(r[0] for r in per[t])
        out[f"gen0={name}"] = {
            "requests_per_cpu_second": [round(r[0]) for r in per[t]],
            "requests_per_second": [round(r[1]) for r in per[t]],
            "rss_peak_mib": [round(r[2], 1) for r in per[t]],
            f"ratio_to_gen0={thresholds[0] or 'default'}": round(per_cpu / base, 3)}
    return out


def run_worker(args: argparse.Namespace) -> dict[str, object]:
    extra = {"REDRIVE_STATUS_PORT": "0"} if args.no_status else {}
    result = asyncio.run(worker_bench.bench(args.records, args.concurrency, args.timeout,
                                            extra))
    samples = result.pop("rss_all")
    assert isinstance(samples, list)
    result.pop("rss_samples_mib", None)
    return {**result, **summary([(t, kib * 1024) for t, kib in samples])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--records", type=int, default=100_000)
    w.add_argument("--concurrency", type=int, default=64)
    w.add_argument("--timeout", type=float, default=900.0)
    w.add_argument("--no-status", action="store_true",
                   help="turn the worker's status service off (REDRIVE_STATUS_PORT=0): its "
                        "view remembers up to REDRIVE_STATUS_MAX_TRACKED requests")
    for name in ("sidecar", "gc-ab"):
        p = sub.add_parser(name)
        p.add_argument("--connections", type=int, default=32)
        p.add_argument("--body-bytes", type=int, default=512)
        if name == "sidecar":
            p.add_argument("--duration", type=int, default=600)
            p.add_argument("--gc-threshold", type=int, default=None,
                           help="gen0 threshold for the sidecar (0: CPython's default); "
                                "default: the sidecar's own setting")
        else:
            p.add_argument("--rounds", type=int, default=3)
            p.add_argument("--ab-seconds", type=int, default=20)
            p.add_argument("--gc-thresholds", default="50000,0",
                           help="comma list; the first is the baseline of the ratios")
    args = parser.parse_args()
    if args.what == "worker":
        result = run_worker(args)
    elif args.what == "sidecar":
        result = run_sidecar(args)
    else:
        result = run_gc_ab(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
