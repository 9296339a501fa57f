"""Proxy benchmark: wrk on loopback, printing requests/s, p50/p99 and ratios.

Rows (each the median of --runs runs of --duration seconds, 64 connections):
  nginx direct                 the fast backend alone (upper bound)
  minimal aiohttp proxy        the baseline every Python proxy is judged against
  sidecar                      Redrive in front of the same backend
  sidecar, backend down        the capture path: every answer waits for Kafka's ack;
                               afterwards the topic is read and compared with the
                               sidecar's count of acknowledged captures
  1-connection p50             added latency, sidecar vs direct
The proxy under test and nginx are pinned to CPU 0 and wrk to CPU 1 (when taskset and
two CPUs exist), as in the targets of the issue. Numbers vary with the machine's load:
compare rows of the same run, not runs of different days.

    python bench/proxy_bench.py [--duration 10] [--runs 3] [--connections 64]
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
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.kafka import read_topic, start_broker, unique_topic  # noqa: E402
from tests.support.metrics import scrape  # noqa: E402
from tests.support.procs import Process, free_port, wait_for_port  # noqa: E402

PAYLOAD = "x" * 1024


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def parse_latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, *, duration: int, connections: int, post: bool, tmp: Path) -> Result:
    args = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if post:
        script = tmp / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\n'
                          'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return Result(rps, parse_latency(out, "50"), parse_latency(out, "99"),
                  int(non2xx.group(1)) if non2xx else 0,
                  sum(int(g) for g in errors.groups()) if errors else 0)


def median(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results),
                  statistics.median(r.p50_ms for r in results),
                  statistics.median(r.p99_ms for r in results),
                  sum(r.non2xx for r in results), sum(r.errors for r in results))


def start_nginx(port: int, tmp: Path) -> Process:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = Process([*pin(0), nginx, "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
                   name="nginx")
    wait_for_port(port)
    return proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: run `make bench` (it installs wrk and nginx-light)")

    tmp = Path(tempfile.mkdtemp(prefix="redrive-bench-"))
    procs: list[Process] = []
    try:
        broker = start_broker()
        procs.append(broker.process)
        nginx_port, base_port, sc_port, sc_admin = (free_port() for _ in range(4))
        down_port, down_admin = free_port(), free_port()
        spool_port, spool_admin = free_port(), free_port()
        procs.append(start_nginx(nginx_port, tmp))
        procs.append(Process([*pin(0), sys.executable, str(REPO / "bench/minimal_proxy.py"),
                              str(base_port), f"http://127.0.0.1:{nginx_port}"],
                             name="minimal-proxy"))
        topic = unique_topic("bench")
        common = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
                  "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_ADMIN_HOST": "127.0.0.1",
                  "REDRIVE_LOG_LEVEL": "warning"}
        sidecar = Process([*pin(0), sys.executable, "-m", "sidecar"], name="sidecar", env={
            **common, "REDRIVE_LISTEN_PORT": str(sc_port), "REDRIVE_ADMIN_PORT": str(sc_admin),
            "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{nginx_port}"})
        procs.append(sidecar)
        down = Process([*pin(0), sys.executable, "-m", "sidecar"], name="sidecar-down", env={
            **common, "REDRIVE_LISTEN_PORT": str(down_port),
            "REDRIVE_ADMIN_PORT": str(down_admin),
            "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}"})
        procs.append(down)
        # Kafka unreachable too: every capture is fsync'd to the spool before the answer.
        spool = Process([*pin(0), sys.executable, "-m", "sidecar"], name="sidecar-spool", env={
            **common, "REDRIVE_LISTEN_PORT": str(spool_port),
            "REDRIVE_ADMIN_PORT": str(spool_admin),
            "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "REDRIVE_SPOOL_DIR": str(tmp / "spool"),
            "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}"})
        (tmp / "spool").mkdir()
        procs.append(spool)
        for port in (base_port, sc_port, down_port, spool_port):
            wait_for_port(port)
        sidecar.wait_http(f"http://127.0.0.1:{sc_admin}/readyz")
        down.wait_http(f"http://127.0.0.1:{down_admin}/readyz")
        time.sleep(1.0)  # let the producers connect

        def run(url: str, post: bool, connections: int | None = None) -> Result:
            wrk(url, duration=1, connections=connections or args.connections, post=post,
                tmp=tmp)  # warm-up
            return median([wrk(url, duration=args.duration,
                               connections=connections or args.connections, post=post, tmp=tmp)
                           for _ in range(args.runs)])

        rows: dict[str, Result] = {}
        for label, port in (("nginx direct", nginx_port), ("minimal aiohttp proxy", base_port),
                            ("sidecar", sc_port)):
            rows[f"{label} GET"] = run(f"http://127.0.0.1:{port}/api/data", post=False)
            rows[f"{label} POST 1KiB"] = run(f"http://127.0.0.1:{port}/api/users", post=True)
        rows["sidecar, backend down POST 1KiB"] = run(
            f"http://127.0.0.1:{down_port}/api/users", post=True)
        rows["sidecar, backend+Kafka down (spool)"] = run(
            f"http://127.0.0.1:{spool_port}/api/users", post=True)
        one_direct = run(f"http://127.0.0.1:{nginx_port}/api/data", post=False, connections=1)
        one_sidecar = run(f"http://127.0.0.1:{sc_port}/api/data", post=False, connections=1)

        metrics = scrape(f"http://127.0.0.1:{down_admin}")
        published = int(metrics['redrive_sidecar_captures_total{result="published"}'])
        lost = int(metrics['redrive_sidecar_captures_total{result="lost"}'])
        records = asyncio.run(read_topic(broker.bootstrap, topic, expect=published,
                                         timeout=120, idle=5))
        distinct = len({k for k, _, _ in records})
        rss = rss_mb(sidecar.pid)
        spool_metrics = scrape(f"http://127.0.0.1:{spool_admin}")

        print(f"\nRedrive proxy benchmark: wrk -c{args.connections}, {args.duration}s runs, "
              f"median of {args.runs}; proxy+nginx on CPU 0, wrk on CPU 1\n")
        print(f"{'row':<36}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
        for label, r in rows.items():
            print(f"{label:<36}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                  f"{r.non2xx:>9}{r.errors:>8}")
        base_get = rows["minimal aiohttp proxy GET"]
        base_post = rows["minimal aiohttp proxy POST 1KiB"]
        print("\nratios (sidecar / minimal proxy; target >= 1.0, aim 1.5):")
        print(f"  GET  {rows['sidecar GET'].rps / base_get.rps:.2f}x")
        print(f"  POST {rows['sidecar POST 1KiB'].rps / base_post.rps:.2f}x")
        print("capture path (backend down, every answer after Kafka's ack; target >= 4000/s):")
        print(f"  {rows['sidecar, backend down POST 1KiB'].rps:.0f} req/s; acknowledged "
              f"captures {published}, lost {lost}, distinct ids in the topic {distinct}, "
              f"missing {max(0, published - distinct)}")
        print("spool path (backend and Kafka down, fsync before each answer; target >= 5000/s, "
              "p99 < 20 ms):")
        sp = rows["sidecar, backend+Kafka down (spool)"]
        spooled = int(spool_metrics['redrive_sidecar_captures_total{result="spooled"}'])
        spool_lost = int(spool_metrics['redrive_sidecar_captures_total{result="lost"}'])
        print(f"  {sp.rps:.0f} req/s, p99 {sp.p99_ms:.1f} ms; spooled {spooled}, "
              f"lost {spool_lost}")
        print("added latency, 1 connection, p50 (target <= 0.5 ms):")
        print(f"  direct {one_direct.p50_ms:.3f} ms, sidecar {one_sidecar.p50_ms:.3f} ms, "
              f"added {one_sidecar.p50_ms - one_direct.p50_ms:.3f} ms")
        print(f"sidecar RSS after the run: {rss:.1f} MB (target <= 80 MB)")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
