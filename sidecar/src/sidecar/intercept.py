"""``redrive-intercept``: redirect a pod's inbound app ports to the sidecar with iptables.

Run once per pod, before the app starts, by the init container the injector adds for
``redrive.io/intercept: iptables`` (it needs NET_ADMIN, like istio-init). In the pod's
network namespace it adds a ``nat`` chain ``REDRIVE_INBOUND`` jumped to from PREROUTING:
inbound TCP to each ``--ports`` port is REDIRECTed to ``--to-port`` (the sidecar). Only
PREROUTING is touched: packets a process in the pod sends itself (the sidecar's own
connection to the app on 127.0.0.1) take the OUTPUT path and are never redirected, so the
proxy cannot loop into itself. Running it again replaces the rules; ``--remove`` undoes
them. Exit 0 on success, 2 on bad arguments, 1 when iptables fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

CHAIN = "REDRIVE_INBOUND"
JUMP = ["-p", "tcp", "-j", CHAIN]

Runner = Callable[[list[str]], int]


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _ports(text: str) -> list[int]:
    ports = [_port(p) for p in text.split(",") if p.strip()]
    if not ports:
        raise argparse.ArgumentTypeError("needs at least one port")
    return ports


def install_rules(ports: Sequence[int], to_port: int) -> list[list[str]]:
    """iptables argument lists that (re)build the chain; the jump is added separately."""
    rules = [["-t", "nat", "-F", CHAIN]]
    rules += [["-t", "nat", "-A", CHAIN, "-p", "tcp", "--dport", str(p), "-j", "REDIRECT",
               "--to-ports", str(to_port)] for p in ports]
    return rules


def apply(ports: Sequence[int], to_port: int, run: Runner) -> None:
    """Create the chain if needed, fill it, and jump to it from PREROUTING once."""
    run(["-t", "nat", "-N", CHAIN])  # fails harmlessly when it exists
    for rule in install_rules(ports, to_port):
        if run(rule) != 0:
            raise RuntimeError(f"iptables {' '.join(rule)} failed")
    if run(["-t", "nat", "-C", "PREROUTING", *JUMP]) != 0 and \
            run(["-t", "nat", "-A", "PREROUTING", *JUMP]) != 0:
        raise RuntimeError("could not add the PREROUTING jump")


def remove(run: Runner) -> None:
    """Delete every jump to the chain, then the chain; fine when nothing is installed."""
    for _ in range(100):  # bounded: each pass deletes one jump
        if run(["-t", "nat", "-D", "PREROUTING", *JUMP]) != 0:
            break
    run(["-t", "nat", "-F", CHAIN])
    run(["-t", "nat", "-X", CHAIN])


def runner(binary: str) -> Runner:
    def run(args: list[str]) -> int:
        proc = subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True,  # noqa: S603 - argv list, no shell
                              timeout=30, check=False)
        if proc.returncode != 0 and args[2:3] not in (["-N"], ["-C"], ["-D"], ["-X"]):
            print(f"redrive-intercept: {binary} {' '.join(args)}: {proc.stderr.strip()}",
                  file=sys.stderr)
        return proc.returncode

    return run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="redrive-intercept",
        description="Redirect inbound TCP for the app's ports to the Redrive sidecar "
                    "(iptables nat PREROUTING, this network namespace only).")
    parser.add_argument("--ports", type=_ports, help="app ports, comma-separated: 3000,3001")
    parser.add_argument("--to-port", type=_port, help="the sidecar's proxy port, e.g. 8080")
    parser.add_argument("--remove", action="store_true", help="undo the redirection")
    parser.add_argument("--ipv6", action="store_true", help="also with ip6tables")
    parser.add_argument("--iptables", default="iptables", help="iptables binary to use")
    args = parser.parse_args(argv)
    if not args.remove and (args.ports is None or args.to_port is None):
        parser.error("--ports and --to-port are required (or --remove)")
    if not args.remove and args.to_port in args.ports:
        parser.error("--to-port must not be one of --ports (the sidecar would loop)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    binaries = [args.iptables] + (["ip6tables"] if args.ipv6 else [])
    for binary in binaries:
        if shutil.which(binary) is None:
            print(f"redrive-intercept: {binary} not found", file=sys.stderr)
            return 1
        run = runner(binary)
        try:
            if args.remove:
                remove(run)
            else:
                apply(args.ports, args.to_port, run)
        except RuntimeError as exc:
            print(f"redrive-intercept: {exc}", file=sys.stderr)
            return 1
    if args.remove:
        print("redrive-intercept: removed")
    else:
        print(f"redrive-intercept: inbound TCP {','.join(map(str, args.ports))} -> "
              f"{args.to_port}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
