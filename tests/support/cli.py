"""Run the installed ``redrive`` console script as a real process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.support.procs import REPO

REDRIVE = str(Path(sys.executable).parent / "redrive")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REDRIVE, *args], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60, cwd=REPO)


async def acli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env)
