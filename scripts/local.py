"""The local pipeline, without a cluster: ``make run`` and ``make demo``.

``run``   starts the embedded broker, the demo backend, the sidecar and the retry worker
          with honcho (Procfile + local.env), prefixed logs, Ctrl-C stops everything.
``demo``  walks the original demo's steps against the pipeline (starting it first when
          it is not already running): normal requests, the backend failing, a POST
          captured, the record read back from Kafka, the backend back, the request
          redriven and applied exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIDECAR = "http://127.0.0.1:8080"
SIDECAR_ADMIN = "http://127.0.0.1:9901"
WORKER_ADMIN = "http://127.0.0.1:9902"
WORKER_STATUS = "http://127.0.0.1:9080"
BACKEND = "http://127.0.0.1:3000"
CONTROL = "http://127.0.0.1:3001"
BOOTSTRAP = "127.0.0.1:9092"
TOPIC = "failed-requests"
PORTS = {"broker": 9092, "backend": 3000, "backend control": 3001, "sidecar": 8080,
         "sidecar admin": 9901, "worker admin": 9902, "worker status": 9080}

BANNER = f"""
  Redrive local pipeline
  ----------------------
  send requests to the sidecar   curl -i {SIDECAR}/api/users
  the backend directly           curl -i {BACKEND}/api/health
  make the backend fail          curl -X PUT {CONTROL}/_faults -d '{{"mode": "refuse"}}'
  and recover                    curl -X DELETE {CONTROL}/_faults
  sidecar metrics / readiness    {SIDECAR_ADMIN}/metrics  {SIDECAR_ADMIN}/readyz
  worker metrics                 {WORKER_ADMIN}/metrics
  a request's status             curl {SIDECAR}/.well-known/redrive/requests/ID
  the operator console           {WORKER_STATUS}/console/
                                 (token: REDRIVE_CONSOLE_TOKEN in local.env)
  watch captured requests        .venv/bin/redrive tail
  the guided demo                make demo   (in another terminal)
  Ctrl-C stops everything.
"""


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def busy_ports() -> list[str]:
    return [f"{name} ({port})" for name, port in PORTS.items() if port_open(port)]


def honcho_command() -> list[str]:
    return [str(BIN / "honcho"), "-d", str(REPO), "-f", str(REPO / "Procfile"),
            "-e", str(REPO / "local.env"), "start"]


def prepare() -> dict[str, str]:
    (REPO / ".local" / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run() -> int:
    busy = busy_ports()
    if busy:
        print("these local ports are already in use: " + ", ".join(busy) +
              "\nstop whatever holds them (an earlier `make run`?) and try again.",
              file=sys.stderr)
        return 1
    print(BANNER, flush=True)
    # honcho forwards Ctrl-C as SIGTERM to each process and waits for them.
    return subprocess.call(honcho_command(), env=prepare(), cwd=REPO)


# -- the demo ---------------------------------------------------------------------------

def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={  # noqa: S310
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw.decode(errors="replace")


def step(n: int, text: str) -> None:
    print(f"\n\033[1m{n}. {text}\033[0m", flush=True)


def show(method: str, url: str, status: int, payload: Any, extra: str = "") -> None:
    text = json.dumps(payload, ensure_ascii=False)
    print(f"   {method} {url} -> {status} {extra}\n     {text[:300]}")


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


async def read_record(capture_id: str, timeout: float = 15.0) -> dict[str, Any] | None:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    if m.key == capture_id.encode():
                        return json.loads(m.value)  # type: ignore[no-any-return]
        return None
    finally:
        await consumer.stop()


def start_pipeline() -> subprocess.Popen[bytes]:
    log = open(REPO / ".local" / "demo-pipeline.log", "wb")  # noqa: SIM115 - kept for the child
    print(f"   starting the local pipeline (logs: {log.name})")
    proc = subprocess.Popen(honcho_command(), env=prepare(), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: all(port_open(p) for p in PORTS.values()), 60,
                   "the pipeline to listen")
        wait_until(lambda: "kafka: connected" in str(http("GET", SIDECAR_ADMIN + "/readyz")[2]),
                   60, "the sidecar to reach Kafka")
    except BaseException:
        stop_pipeline(proc)
        print(f"   the pipeline did not come up; see {log.name}", file=sys.stderr)
        raise
    return proc


def stop_pipeline(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def demo() -> int:
    prepare()
    own: subprocess.Popen[bytes] | None = None
    if not port_open(8080):
        own = start_pipeline()
    try:
        return _demo_steps()
    finally:
        if own is not None:
            print("\n   stopping the pipeline this demo started")
            stop_pipeline(own)


def _demo_steps() -> int:
    step(1, "Normal traffic flows through the sidecar to the backend")
    for path in ("/api/health", "/api/users"):
        status, _, body = http("GET", SIDECAR + path)
        show("GET", path, status, body)

    step(2, "The backend goes down (its port now refuses connections)")
    status, _, body = http("PUT", CONTROL + "/_faults", {"mode": "refuse"})
    show("PUT", CONTROL + "/_faults", status, body)

    step(3, "A client creates a user while the backend is down")
    email = f"ada.{int(time.time())}@example.com"
    status, headers, body = http("POST", SIDECAR + "/api/users",
                                 {"name": "Ada Lovelace", "email": email})
    show("POST", "/api/users", status, body, f"(Retry-After: {headers.get('Retry-After')})")
    if not isinstance(body, dict) or "id" not in body:
        raise SystemExit("demo: the sidecar did not answer with a capture id")
    capture_id = body["id"]
    print(f"   queued={body.get('queued')}: the request is parked, not lost")
    if port_open(9080):
        path = body.get("status_url") or f"/.well-known/redrive/requests/{capture_id}"
        queued = wait_until(lambda: _status(path, ("queued", "retrying")), 15,
                            "the request's status")
        show("GET", path, 200, queued, "(the client polls the origin it called)")

    step(4, "The captured request, read back from Kafka topic 'failed-requests'")
    record = asyncio.run(read_record(capture_id))
    if record is None:
        raise SystemExit("demo: the record did not show up in Kafka")
    shown = {k: record[k] for k in ("id", "method", "uri", "headers", "body", "error",
                                    "error_reason", "idempotency_key", "redacted_headers")}
    print("   " + json.dumps(shown, indent=2, ensure_ascii=False).replace("\n", "\n   "))

    step(5, "The backend comes back")
    status, _, body = http("DELETE", CONTROL + "/_faults")
    show("DELETE", CONTROL + "/_faults", status, body)

    if not port_open(9902):
        print("\n   (no retry worker running: the record waits in Kafka for one)")
        return 0
    step(6, "The retry worker redrives the request; the backend applies it exactly once")

    def created() -> list[Any]:
        _, _, users = http("GET", BACKEND + "/api/users")
        return [u for u in users.get("users", []) if u.get("email") == email]

    matches = wait_until(created, 60, "the worker to replay the request")
    print(f"   user created by the replay: {json.dumps(matches[0])}")
    if port_open(9080):
        path = f"/.well-known/redrive/requests/{capture_id}"
        show("GET", path, 200, wait_until(lambda: _status(path, ("delivered",)), 15,
                                          "the status to read delivered"))
    # Replay the same record once more, as a crashed worker would, to show the backend's
    # Idempotency-Key handling: the copy is answered, nothing is created twice.
    replay_headers = {"Idempotency-Key": record["idempotency_key"],
                      "X-Redrive-Replay": capture_id, "X-Redrive-Attempt": "99"}
    status, headers, body = http("POST", SIDECAR + "/api/users", json.loads(record["body"]),
                                 headers=replay_headers)
    show("POST (duplicate replay)", "/api/users", status, body,
         f"(Idempotent-Replayed: {headers.get('Idempotent-Replayed')})")
    time.sleep(0.5)
    count = len(created())
    print(f"   users with {email}: {count} (exactly once: {'yes' if count == 1 else 'NO'})")
    return 0 if count == 1 else 1


def _status(path: str, states: tuple[str, ...]) -> Any:
    """The request's status through the sidecar once it is in ``states``, else None."""
    status, _, body = http("GET", SIDECAR + path)
    return body if status == 200 and isinstance(body, dict) and \
        body.get("state") in states else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "demo"))
    args = parser.parse_args()
    sys.exit(run() if args.command == "run" else demo())


if __name__ == "__main__":
    main()
