"""Proxy benchmark: wrk on loopback, printing requests/s, p50/p99 and ratios.

Rows (each the median of --runs runs of --duration seconds, 64 connections):
  nginx direct                 the fast backend alone (upper bound)
  minimal aiohttp proxy        the baseline every Python proxy is judged against
  sidecar                      Redrive in front of the same backend
  sidecar, backend down        the capture path: every answer waits for Kafka's ack;
                               afterwards the topic is read and compared with the
                               sidecar's count of acknowledged captures
  1-connection p50             added latency, sidecar vs direct
and the rows under the conditions of issue 12 ("JSON" rows): a 1 KiB JSON body and a
handful of ordinary headers (Accept, User-Agent, X-Request-Id, Accept-Encoding):
  minimal aiohttp proxy / sidecar  GET and POST pass-through
  minimal proxy, 502 passed on     the app answers 502; the baseline of the capture path
  sidecar capture path             the same 502 captured: answered after Kafka's ack
  sidecar spool path               the app and Kafka down: fsync'd before each answer
  capture path, status records off REDRIVE_STATUS_RECORDS=false: what the `queued` status
                                   record costs the capture path
  capture path, info log           REDRIVE_LOG_LEVEL=info (the default; the other rows run
                                   at warning): what the per-capture log line costs
The last two, and the capture path against the minimal proxy passing the 502 on, are
also measured side by side (two wrk at once, both proxies sharing CPU 0: the ratio of
their rates is the inverse ratio of their CPU per request, under the same machine load).
The proxy under test and nginx are pinned to CPU 0; wrk and the Kafka-protocol broker to
CPU 1 (when taskset and two CPUs exist), as in the issue's conditions. The rows run in
interleaved rounds (each round runs every row once; a row's result is the median over
the rounds), so a change in the machine's load hits every row alike. Numbers vary with
the machine's load: compare rows and ratios of the same run, not runs of different days.

    python bench/proxy_bench.py [--duration 10] [--runs 3] [--connections 64] [--rows all|json]
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from redrive.localbroker import broker_command  # noqa: E402
from tests.support.kafka import read_topic, unique_topic  # noqa: E402
from tests.support.metrics import scrape  # noqa: E402
from tests.support.procs import Process, free_port, wait_for_port  # noqa: E402

JSON_BODY = '{"name": "' + "x" * 1012 + '"}'  # 1 KiB
ORDINARY_HEADERS = {"Accept": "application/json", "User-Agent": "bench/1.0",
                    "X-Request-Id": "3f1c0e7a-5d2b-4c1e-9a57-0b8e2f6d4c11",
                    "Accept-Encoding": "gzip, deflate"}


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


def lua_script(tmp: Path, name: str, *, post: bool, json: bool) -> Path:
    lines = []
    if post:
        lines.append('wrk.method = "POST"')
        if json:
            assert len(JSON_BODY) == 1024
            lines.append(f"wrk.body = '{JSON_BODY}'")
            lines.append('wrk.headers["Content-Type"] = "application/json"')
        else:
            lines.append('wrk.body = string.rep("x", 1024)')
            lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    if json:
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in ORDINARY_HEADERS.items()]
    script = tmp / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk(url: str, *, duration: int, connections: int, post: bool, tmp: Path,
        json: bool = False) -> Result:
    args = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if post or json:
        name = ("post" if post else "get") + ("-json" if json else "")
        args += ["-s", str(lua_script(tmp, name, post=post, json=json))]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return Result(rps, parse_latency(out, "50"), parse_latency(out, "99"),
                  int(non2xx.group(1)) if non2xx else 0,
                  sum(int(g) for g in errors.groups()) if errors else 0)


def paired(url_a: str, url_b: str, *, duration: int, connections: int, tmp: Path
           ) -> tuple[Result, Result]:
    """wrk against two proxies at the same time (both POST, JSON rows). Pinned to the same
    core, the two share it as the scheduler sees fit, so the ratio of their rates is the
    inverse ratio of their CPU per request, measured under one and the same machine load:
    far steadier than two runs one after the other on a shared machine."""
    results: dict[str, Result] = {}

    def run(name: str, url: str) -> None:
        results[name] = wrk(url, duration=duration, connections=connections, post=True,
                            tmp=tmp, json=True)

    threads = [threading.Thread(target=run, args=args) for args in (("a", url_a),
                                                                      ("b", url_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results["a"], results["b"]


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
    location /fail {{ default_type application/json; return 502 '{{"error":"bad gateway"}}'; }}
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


@dataclass
class Row:
    label: str
    url: str
    post: bool
    json: bool = False
    connections: int | None = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rows", choices=("all", "json"), default="all",
                    help="json: only the rows under the issue's conditions")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: run `make bench` (it installs wrk and nginx-light)")

    tmp = Path(tempfile.mkdtemp(prefix="redrive-bench-"))
    procs: list[Process] = []
    try:
        # The broker shares the load generator's core, as in the conditions.
        broker_port = free_port()
        broker = Process([*pin(1), *broker_command("127.0.0.1", broker_port)], name="tansu")
        procs.append(broker)
        wait_for_port(broker_port, timeout=15)
        bootstrap = f"127.0.0.1:{broker_port}"
        nginx_port, base_port, sc_port, sc_admin = (free_port() for _ in range(4))
        down_port, down_admin = free_port(), free_port()
        spool_port, spool_admin = free_port(), free_port()
        procs.append(start_nginx(nginx_port, tmp))
        procs.append(Process([*pin(0), sys.executable, str(REPO / "bench/minimal_proxy.py"),
                              str(base_port), f"http://127.0.0.1:{nginx_port}"],
                             name="minimal-proxy"))
        topic = unique_topic("bench")
        common = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDRIVE_TOPIC": topic,
                  "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_ADMIN_HOST": "127.0.0.1",
                  "REDRIVE_LOG_LEVEL": "warning"}
        # In front of nginx: pass-through, and /fail (502) for the capture path.
        sidecar = Process([*pin(0), sys.executable, "-m", "sidecar"], name="sidecar", env={
            **common, "REDRIVE_LISTEN_PORT": str(sc_port), "REDRIVE_ADMIN_PORT": str(sc_admin),
            "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{nginx_port}"})
        procs.append(sidecar)
        down = Process([*pin(0), sys.executable, "-m", "sidecar"], name="sidecar-down", env={
            **common, "REDRIVE_TOPIC": topic + "-down", "REDRIVE_LISTEN_PORT": str(down_port),
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
        # The capture path twice more, each with one thing changed: no `queued` status
        # records, and the default log level (one info line per capture).
        variants: dict[str, tuple[int, int]] = {}
        for name, extra in (("nostatus", {"REDRIVE_STATUS_RECORDS": "false"}),
                            ("infolog", {"REDRIVE_LOG_LEVEL": "info"})):
            port, admin = free_port(), free_port()
            procs.append(Process([*pin(0), sys.executable, "-m", "sidecar"],
                                 name=f"sidecar-{name}", env={
                **common, "REDRIVE_TOPIC": f"{topic}-{name}", "REDRIVE_LISTEN_PORT": str(port),
                "REDRIVE_ADMIN_PORT": str(admin),
                "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{nginx_port}", **extra}))
            variants[name] = (port, admin)
        for port in (base_port, sc_port, down_port, spool_port,
                     *(port for port, _ in variants.values())):
            wait_for_port(port)
        for _, admin in variants.values():
            sidecar.wait_http(f"http://127.0.0.1:{admin}/readyz")
        sidecar.wait_http(f"http://127.0.0.1:{sc_admin}/readyz")
        down.wait_http(f"http://127.0.0.1:{down_admin}/readyz")
        time.sleep(1.0)  # let the producers connect

        def url(port: int, path: str) -> str:
            return f"http://127.0.0.1:{port}{path}"

        rows: list[Row] = []
        if args.rows == "all":
            for label, port in (("nginx direct", nginx_port),
                                ("minimal aiohttp proxy", base_port), ("sidecar", sc_port)):
                rows.append(Row(f"{label} GET", url(port, "/api/data"), post=False))
                rows.append(Row(f"{label} POST 1KiB", url(port, "/api/users"), post=True))
            rows.append(Row("sidecar, backend down POST 1KiB", url(down_port, "/api/users"),
                            post=True))
            rows.append(Row("sidecar, backend+Kafka down (spool)",
                            url(spool_port, "/api/users"), post=True))
            rows.append(Row("1-conn nginx direct GET", url(nginx_port, "/api/data"),
                            post=False, connections=1))
            rows.append(Row("1-conn sidecar GET", url(sc_port, "/api/data"), post=False,
                            connections=1))
        rows += [
            Row("JSON minimal proxy GET", url(base_port, "/api/data"), post=False, json=True),
            Row("JSON sidecar GET", url(sc_port, "/api/data"), post=False, json=True),
            Row("JSON minimal proxy POST", url(base_port, "/api/users"), post=True, json=True),
            Row("JSON sidecar POST", url(sc_port, "/api/users"), post=True, json=True),
            Row("JSON minimal proxy, 502 passed on", url(base_port, "/fail"), post=True,
                json=True),
            Row("JSON sidecar capture path (502)", url(sc_port, "/fail"), post=True,
                json=True),
            Row("JSON sidecar spool path", url(spool_port, "/api/users"), post=True,
                json=True),
            Row("JSON capture, status records off", url(variants["nostatus"][0], "/fail"),
                post=True, json=True),
            Row("JSON capture, info log", url(variants["infolog"][0], "/fail"), post=True,
                json=True),
        ]

        def once(row: Row, duration: int) -> Result:
            return wrk(row.url, duration=duration,
                       connections=row.connections or args.connections, post=row.post,
                       tmp=tmp, json=row.json)

        for row in rows:
            once(row, 1)  # warm-up
        samples: dict[str, list[Result]] = {row.label: [] for row in rows}
        for _ in range(args.runs):  # interleaved: every row once per round
            for row in rows:
                samples[row.label].append(once(row, args.duration))
        results = {label: median(rs) for label, rs in samples.items()}
        # What one setting costs the capture path, measured side by side (see paired()):
        # the capture sidecar against its twin with status records off, and the twin at
        # the default log level (info) against the capture sidecar (warning).
        side_by_side: dict[str, list[float]] = {"status": [], "infolog": [], "capture": []}
        capture_url = url(sc_port, "/fail")
        for _ in range(args.runs):
            # The headline comparison once more, side by side: the machine's drift between
            # two rows run one after the other moves the baseline's own rate a lot.
            captured, passed_on = paired(capture_url, url(base_port, "/fail"),
                                         duration=args.duration,
                                         connections=args.connections, tmp=tmp)
            side_by_side["capture"].append(captured.rps / passed_on.rps)
            with_status, without = paired(capture_url, url(variants["nostatus"][0], "/fail"),
                                          duration=args.duration,
                                          connections=args.connections, tmp=tmp)
            side_by_side["status"].append(with_status.rps / without.rps)
            at_info, at_warning = paired(url(variants["infolog"][0], "/fail"), capture_url,
                                         duration=args.duration,
                                         connections=args.connections, tmp=tmp)
            side_by_side["infolog"].append(at_info.rps / at_warning.rps)

        print(f"\nRedrive proxy benchmark: wrk -c{args.connections}, {args.duration}s runs, "
              f"median of {args.runs} interleaved rounds; proxies+nginx on CPU 0, wrk and "
              "the broker on CPU 1\n")
        print(f"{'row':<40}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
        for label, r in results.items():
            print(f"{label:<40}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                  f"{r.non2xx:>9}{r.errors:>8}")

        def ratio(a: str, b: str) -> str:
            return f"{results[a].rps / results[b].rps:.2f}x"

        if args.rows == "all":
            print("\nratios, plain rows (sidecar / minimal proxy):")
            print(f"  GET  {ratio('sidecar GET', 'minimal aiohttp proxy GET')}")
            print(f"  POST {ratio('sidecar POST 1KiB', 'minimal aiohttp proxy POST 1KiB')}")
            metrics = scrape(f"http://127.0.0.1:{down_admin}")
            published = int(metrics['redrive_sidecar_captures_total{result="published"}'])
            lost = int(metrics['redrive_sidecar_captures_total{result="lost"}'])
            records = asyncio.run(read_topic(bootstrap, topic + "-down", expect=published,
                                             timeout=120, idle=5))
            distinct = len({k for k, _, _ in records})
            print("backend down (connection refused), every answer after Kafka's ack:")
            print(f"  {results['sidecar, backend down POST 1KiB'].rps:.0f} req/s; "
                  f"acknowledged captures {published}, lost {lost}, distinct ids in the "
                  f"topic {distinct}, missing {max(0, published - distinct)}")
            one_direct, one_sidecar = results["1-conn nginx direct GET"], \
                results["1-conn sidecar GET"]
            print("added latency, 1 connection, p50 (target <= 0.5 ms):")
            print(f"  direct {one_direct.p50_ms:.3f} ms, sidecar {one_sidecar.p50_ms:.3f} ms, "
                  f"added {one_sidecar.p50_ms - one_direct.p50_ms:.3f} ms")
        capture = results["JSON sidecar capture path (502)"]
        sp = results["JSON sidecar spool path"]
        spool_metrics = scrape(f"http://127.0.0.1:{spool_admin}")
        spooled = int(spool_metrics['redrive_sidecar_captures_total{result="spooled"}'])
        spool_lost = int(spool_metrics['redrive_sidecar_captures_total{result="lost"}'])
        print("\nratios under the issue's conditions (sidecar / minimal proxy, same run):")
        print(f"  GET pass-through   {ratio('JSON sidecar GET', 'JSON minimal proxy GET')}"
              "  (target 3x)")
        print(f"  POST pass-through  {ratio('JSON sidecar POST', 'JSON minimal proxy POST')}"
              "  (target 3x)")
        print(f"  capture path       "
              f"{ratio('JSON sidecar capture path (502)', 'JSON minimal proxy, 502 passed on')}"
              f", p99 {capture.p99_ms:.1f} ms  (target 2x, p99 < 15 ms)")
        print(f"  spool path         {sp.rps:.0f} req/s, p99 {sp.p99_ms:.1f} ms; spooled "
              f"{spooled}, lost {spool_lost}  (target 5,000/s, p99 < 20 ms)")
        print(f"  capture path at the default log level (info, one line per capture): "
              f"{ratio('JSON capture, info log', 'JSON minimal proxy, 502 passed on')}")
        print("side by side (two wrk at once, both proxies on CPU 0; median of "
              f"{args.runs} rounds):")
        print(f"  capture path       sidecar capturing the 502 / minimal proxy passing it on "
              f"{statistics.median(side_by_side['capture']):.2f}x  (target 2x)")
        print(f"  status records     capture path with / without them "
              f"{statistics.median(side_by_side['status']):.2f}x  (target >= 0.95x)")
        print(f"  info log           capture path at info / at warning "
              f"{statistics.median(side_by_side['infolog']):.2f}x")
        print(f"sidecar RSS after the run: {rss_mb(sidecar.pid):.1f} MB (target <= 80 MB)")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
