"""Transparent interception, proven in a network namespace of our own (root only).

A pod in miniature: a namespace with an app on :3000 and the sidecar on :8080, joined to
the host by a veth pair with link-local addresses. ``redrive-intercept --ports 3000
--to-port 8080`` runs inside it, as the injector's init container does. A client outside
the namespace (the host end of the veth) then reaches the sidecar by calling the app's
port: a failure is captured into a real broker, and the sidecar's own upstream connection
still reaches the app directly. Traffic goes only to the namespace and veth made here,
and both are removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from redrive.localbroker import broker_command
from tests.support.kafka import read_topic, unique_topic
from tests.support.procs import Process, wait_for_port

pytestmark = pytest.mark.slow

APP_PORT, SIDECAR_PORT, ADMIN_PORT = 3000, 8080, 9901
TOOLS = ("ip", "iptables")

APP = textwrap.dedent('''
    import http.server, json, sys
    class App(http.server.BaseHTTPRequestHandler):
        def answer(self, status):
            body = json.dumps({"peer": self.client_address[0], "path": self.path}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            self.answer(200)
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.answer(503)
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), App).serve_forever()
''')


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (scripts/install-tools.sh installs iptables)"
    return None


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass
class Netns:
    name: str
    host_if: str
    host_ip: str
    pod_ip: str
    procs: list[Process] = field(default_factory=list)

    def run(self, *args: str, env: dict[str, str] | None = None, name: str = "ns") -> Process:
        proc = Process(["ip", "netns", "exec", self.name, *args], env=env, name=name)
        self.procs.append(proc)
        return proc

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True,
                              text=True, timeout=30, check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    subnet = random.choice([n for n in range(1, 255) if n != 169])
    ns = Netns(name=f"redrive-test-{tag}", host_if=f"rdh{tag}",
               host_ip=f"169.254.{subnet}.1", pod_ip=f"169.254.{subnet}.2")
    pod_if = f"rdp{tag}"
    try:
        sh("ip", "netns", "add", ns.name)
        sh("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", pod_if)
        sh("ip", "link", "set", pod_if, "netns", ns.name)
        sh("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        sh("ip", "link", "set", ns.host_if, "up")
        sh("ip", "netns", "exec", ns.name, "ip", "addr", "add", f"{ns.pod_ip}/30", "dev", pod_if)
        sh("ip", "netns", "exec", ns.name, "ip", "link", "set", pod_if, "up")
        sh("ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        for proc in reversed(ns.procs):
            proc.stop(timeout=10)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30,
                       check=False)
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, timeout=30,
                       check=False)


def _body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {"text": raw.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def request(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), _body(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), _body(exc.read())


def wait_until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def test_intercepted_app_port_reaches_the_sidecar_which_captures_failures(netns: Netns) -> None:
    # The broker listens on the host end of our veth, so the namespace reaches it.
    broker_port = random.randint(20000, 40000)
    broker = Process(broker_command(netns.host_ip, broker_port), name="tansu-netns")
    netns.procs.append(broker)
    wait_for_port(broker_port, timeout=15, host=netns.host_ip)
    topic = unique_topic("intercept")
    netns.run(sys.executable, "-c", APP, str(APP_PORT), name="netns-app")
    netns.run(sys.executable, "-m", "sidecar", name="netns-sidecar", env={
        "REDRIVE_LISTEN_PORT": str(SIDECAR_PORT), "REDRIVE_ADMIN_PORT": str(ADMIN_PORT),
        "REDRIVE_UPSTREAM_URL": f"http://127.0.0.1:{APP_PORT}",
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": f"{netns.host_ip}:{broker_port}",
        "REDRIVE_TOPIC": topic, "REDRIVE_DLQ_TOPIC": f"{topic}.dlq",
        "REDRIVE_LOG_FORMAT": "text"})
    app_url = f"http://{netns.pod_ip}:{APP_PORT}"
    wait_until(lambda: request(f"{app_url}/ping")[0] == 200)
    wait_until(lambda: request(f"http://{netns.pod_ip}:{ADMIN_PORT}/readyz")[0] == 200, 30)

    # Before interception the app's port is the app: its 503 goes straight to the client.
    status, headers, body = request(f"{app_url}/orders", b'{"n": 1}')
    assert status == 503 and "X-Redrive-Id" not in headers
    assert body["peer"] == netns.host_ip

    result = netns.exec(sys.executable, "-m", "sidecar.intercept", "--ports", str(APP_PORT),
                        "--to-port", str(SIDECAR_PORT))
    assert result.returncode == 0, result.stderr
    rules = netns.exec("iptables", "-t", "nat", "-S").stdout
    assert f"--dport {APP_PORT} -j REDIRECT --to-ports {SIDECAR_PORT}" in rules
    assert "-A PREROUTING -p tcp -j REDRIVE_INBOUND" in rules
    assert "OUTPUT -p tcp -j REDRIVE" not in rules, "the sidecar's own traffic is left alone"

    # Now the same port answers through the sidecar: the failure is captured and queued.
    status, headers, body = request(f"{app_url}/orders", b'{"n": 2}')
    assert status == 503, body
    capture_id = headers["X-Redrive-Id"]
    assert body["id"] == capture_id and body["queued"] is True
    records = asyncio.run(read_topic(f"{netns.host_ip}:{broker_port}", topic,
                                     keys=[capture_id.encode()], timeout=20))
    [record] = [json.loads(v) for k, v, _ in records if k == capture_id.encode()]
    assert (record["method"], record["path"]) == ("POST", "/orders")
    assert json.loads(record["body"]) == {"n": 2}
    # The sidecar reached the app over loopback directly (no loop through its own port).
    status, _, body = request(f"{app_url}/whoami")
    assert status == 200 and body["peer"] == "127.0.0.1"

    # Running it again is harmless; --remove restores direct access.
    again = netns.exec(sys.executable, "-m", "sidecar.intercept", "--ports", str(APP_PORT),
                       "--to-port", str(SIDECAR_PORT))
    assert again.returncode == 0, again.stderr
    assert netns.exec("iptables", "-t", "nat", "-S").stdout.count("REDIRECT") == 1
    removed = netns.exec(sys.executable, "-m", "sidecar.intercept", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert "REDRIVE_INBOUND" not in netns.exec("iptables", "-t", "nat", "-S").stdout
    status, headers, body = request(f"{app_url}/orders", b'{"n": 3}')
    assert status == 503 and "X-Redrive-Id" not in headers


def test_redrive_intercept_refuses_bad_arguments() -> None:
    for args in (["--ports", "3000"], ["--ports", "3000", "--to-port", "3000"],
                 ["--ports", "x", "--to-port", "8080"], ["--ports", "70000", "--to-port", "1"]):
        proc = subprocess.run([sys.executable, "-m", "sidecar.intercept", *args],
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "redrive-intercept" in proc.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "redrive-intercept"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert "--to-port" in out and "--remove" in out
