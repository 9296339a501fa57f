"""The spool on real files: order, restarts, limits, disk errors, crashes."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from sidecar.spool import HEADER_SIZE, Spool, SpooledRecord, SpoolError, SpoolFull

REPO = Path(__file__).resolve().parents[2]


class Collector:
    """A drain callback that records what it was given and can be told to fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.keys: list[bytes] = []
        self.windows: list[int] = []
        self.fail_at = fail_at

    async def __call__(self, records: Sequence[SpooledRecord]) -> list[BaseException | None]:
        self.windows.append(len(records))
        out: list[BaseException | None] = []
        for record in records:
            if self.fail_at is not None and len(self.keys) == self.fail_at:
                out.append(ConnectionError("kafka is down"))
                break
            self.keys.append(record.key)
            out.append(None)
        return out


def keys(n: int, start: int = 0) -> list[bytes]:
    return [f"id-{i}".encode() for i in range(start, start + n)]


async def fill(spool: Spool, n: int, start: int = 0) -> None:
    for key in keys(n, start):
        await spool.append(key, b"v" * 100, [("redrive-version", b"1")])


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.log"))


async def test_records_come_back_oldest_first_across_segments_and_a_restart(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024)
    spool.open()
    await fill(spool, 40)
    assert len(segments(tmp_path)) > 3
    await spool.close()

    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024)
    report = spool.open()
    assert (report.records, report.segments) == (40, len(segments(tmp_path)))
    assert report.bytes == sum(p.stat().st_size for p in segments(tmp_path))
    await fill(spool, 10, start=40)
    publish = Collector()
    assert await spool.drain(publish) == 50
    assert publish.keys == keys(50)
    assert (spool.records, spool.bytes, spool.oldest_spooled_at) == (0, 0, None)
    assert segments(tmp_path) == []  # every segment was deleted once published
    await spool.close()


async def test_spool_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await fill(spool, 1)
    await spool.close()
    with open(segments(tmp_path)[0], "ab") as f:
        f.write(b"\xd5torn")
    Spool(tmp_path, 1 << 20).open()
    quarantine = tmp_path / "quarantine"
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700
    for path in [*segments(tmp_path), *quarantine.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_failing_publish_stops_the_drain_and_the_record_is_sent_next_time(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024)
    spool.open()
    await fill(spool, 30)
    with pytest.raises(ConnectionError):
        await spool.drain(Collector(fail_at=12))
    assert spool.records == 18
    publish = Collector()
    assert await spool.drain(publish) == 18
    assert publish.keys == keys(18, start=12)
    await spool.close()


async def test_a_restart_after_a_partial_drain_resends_nothing_already_published(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=4096)
    spool.open()
    await fill(spool, 60)
    first = Collector()
    assert await spool.drain(first, max_records=37) == 37
    await spool.close()

    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=4096)
    assert spool.open().records == 23
    rest = Collector()
    await spool.drain(rest)
    assert first.keys + rest.keys == keys(60)
    await spool.close()


async def test_the_oldest_spooled_time_survives_a_restart(tmp_path: Path) -> None:
    now = iter(range(1000, 2000))
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024, clock=lambda: float(next(now)))
    spool.open()
    assert spool.oldest_spooled_at is None
    await fill(spool, 20)
    assert spool.oldest_spooled_at == 1000.0
    await spool.drain(Collector(), max_records=3)
    assert spool.oldest_spooled_at == 1003.0
    await spool.close()
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024)
    spool.open()
    assert spool.oldest_spooled_at == 1003.0
    await spool.close()


async def test_an_append_past_max_bytes_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    frame = HEADER_SIZE + 18 + len("id-0") + 100 + 2 + len("redrive-version") + 4 + 1
    spool = Spool(tmp_path, max_bytes=5 * frame)
    spool.open()
    await fill(spool, 5)
    size = spool.bytes
    with pytest.raises(SpoolFull, match="full"):
        await fill(spool, 1, start=5)
    assert (spool.records, spool.bytes) == (5, size)
    assert sum(p.stat().st_size for p in segments(tmp_path)) == size
    await spool.drain(Collector(), max_records=5)
    await fill(spool, 1, start=5)  # draining made room again
    await spool.close()


async def test_concurrent_appends_over_the_cap_never_exceed_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.open()
    results = await asyncio.gather(*(spool.append(k, b"v" * 300, []) for k in keys(100)),
                                   return_exceptions=True)
    stored = [r for r in results if r is None]
    assert all(isinstance(r, SpoolFull) for r in results if r is not None)
    assert 0 < len(stored) < 100
    assert spool.records == len(stored)
    assert spool.bytes <= 10_000
    await spool.close()


def test_a_missing_spool_directory_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match=f"{tmp_path / 'nope'} does not exist"):
        Spool(tmp_path / "nope", 1 << 20).open()


def test_a_regular_file_as_spool_directory_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="is not a directory"):
        Spool(tmp_path / "file", 1 << 20).open()
    with pytest.raises(SpoolError, match="not usable"):
        Spool(tmp_path / "file" / "spool", 1 << 20).open()


def test_an_unwritable_spool_directory_is_a_startup_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores permission bits, so fail the probe the way a read-only mount would.
    real_open = os.open

    def read_only_open(path: str | os.PathLike[str], flags: int, *args: int,
                       **kwargs: int) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(SpoolError, match=r"is not writable.*Read-only"):
        Spool(tmp_path, 1 << 20).open()


async def test_a_spool_directory_in_use_by_another_spool_is_a_startup_error(
        tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.open()
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, 1 << 20).open()
    await first.close()
    second = Spool(tmp_path, 1 << 20)
    second.open()  # closing released the directory
    await second.close()


@pytest.mark.parametrize("failing", ["write", "fsync"])
async def test_a_full_disk_refuses_the_append_and_leaves_the_segment_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await fill(spool, 3)
    size = spool.bytes
    real_write, real_fsync = os.write, os.fsync
    failures = []

    def is_segment(fd: int) -> bool:
        return "segment-" in os.readlink(f"/proc/self/fd/{fd}")

    def full_write(fd: int, data: bytes) -> int:
        if is_segment(fd) and not failures:
            failures.append(fd)
            real_write(fd, bytes(data)[:len(data) // 2])  # a partial frame reaches the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def full_fsync(fd: int) -> None:
        if is_segment(fd) and not failures:
            failures.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    if failing == "write":
        monkeypatch.setattr(os, "write", full_write)
    else:
        monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(SpoolFull, match="disk full"):
        await fill(spool, 1, start=3)
    monkeypatch.undo()
    assert failures
    assert (spool.records, spool.bytes) == (3, size)
    assert segments(tmp_path)[0].stat().st_size == size  # the partial frame is gone
    await fill(spool, 1, start=3)  # and the spool goes on
    await spool.close()

    spool = Spool(tmp_path, 1 << 20)
    report = spool.open()
    assert (report.records, report.quarantined_files) == (4, ())
    publish = Collector()
    await spool.drain(publish)
    assert publish.keys == keys(4)
    await spool.close()


async def test_garbage_after_the_last_record_is_quarantined_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await fill(spool, 5)
    await spool.close()
    seg = segments(tmp_path)[0]
    good = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\xd5\x01\x00\x00\x00\x00\x01\x00half a frame")
    spool = Spool(tmp_path, 1 << 20)
    report = spool.open()
    assert report.records == 5
    assert report.quarantined_bytes == 20
    assert report.quarantined_files == (str(tmp_path / "quarantine" / f"{seg.name}.{good}.bad"),)
    assert seg.stat().st_size == good
    publish = Collector()
    await spool.drain(publish)
    assert publish.keys == keys(5)
    await spool.close()


async def test_corruption_found_while_draining_is_quarantined_and_the_drain_goes_on(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_max_bytes=1024)
    spool.open()
    await fill(spool, 20)
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # bit rot in the last record of the first segment
    first.write_bytes(data)
    publish = Collector()
    await spool.drain(publish)
    (lost,) = set(keys(20)) - set(publish.keys)
    assert publish.keys == [k for k in keys(20) if k != lost]
    assert spool.records == 0
    assert len(list((tmp_path / "quarantine").iterdir())) == 1
    await spool.close()


async def test_appends_and_a_running_drain_lose_nothing_and_keep_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 22, segment_max_bytes=4096)
    spool.open()
    publish = Collector()
    writers_done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(150):
            await spool.append(f"{w}-{i}".encode(), b"v" * 64, [])
            if i % 10 == 0:
                await asyncio.sleep(0)

    async def drainer() -> None:
        while not (writers_done.is_set() and spool.records == 0):
            if not await spool.drain(publish):
                await asyncio.sleep(0.001)

    drain_task = asyncio.create_task(drainer())
    await asyncio.gather(*(writer(w) for w in range(8)))
    writers_done.set()
    await asyncio.wait_for(drain_task, 10)
    assert len(publish.keys) == len(set(publish.keys)) == 8 * 150
    for w in range(8):
        mine = [k for k in publish.keys if k.startswith(f"{w}-".encode())]
        assert mine == [f"{w}-{i}".encode() for i in range(150)]
    assert (spool.records, spool.bytes, segments(tmp_path)) == (0, 0, [])
    await spool.close()


async def test_close_finishes_accepted_appends_and_later_ones_are_refused(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    pending = [asyncio.create_task(spool.append(k, b"v", [])) for k in keys(20)]
    await asyncio.sleep(0)
    await spool.close()
    await spool.close()
    await asyncio.gather(*pending)
    with pytest.raises(SpoolError, match="not open"):
        await spool.append(b"late", b"v", [])
    spool = Spool(tmp_path, 1 << 20)
    assert spool.open().records == 20
    await spool.close()


APPENDER = """
import asyncio, sys
from pathlib import Path
from sidecar.spool import Spool

async def main():
    spool = Spool(Path(sys.argv[1]), 1 << 30, segment_max_bytes=32 * 1024)
    spool.open()
    async def writer(w):
        for i in range(1_000_000):
            await spool.append(f"{w}-{i}".encode(), b"x" * 200, [("h", b"v")])
            sys.stdout.write(f"{w}-{i}\\n")
            sys.stdout.flush()
    await asyncio.gather(*(writer(w) for w in range(16)))

asyncio.run(main())
"""

DRAINER = """
import asyncio, sys
from pathlib import Path
from sidecar.spool import Spool

async def main():
    spool = Spool(Path(sys.argv[1]), 1 << 30, segment_max_bytes=8 * 1024,
                  window_records=16)
    spool.open()
    async def publish(records):
        for record in records:
            sys.stdout.write(record.key.decode() + "\\n")
        sys.stdout.flush()
        await asyncio.sleep(0.005)
        return [None] * len(records)
    await spool.drain(publish)

asyncio.run(main())
"""


@pytest.mark.parametrize("kill_after", [50 + 97 * run for run in range(20)])
async def test_every_append_that_returned_survives_a_sigkill(
        tmp_path: Path, kill_after: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path)],
                            stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    acked: list[str] = []
    while len(acked) < kill_after:
        line = proc.stdout.readline()
        assert line, "the appender died on its own"
        acked.append(line.decode().rstrip("\n"))
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    acked += [ln for ln in rest.decode().split("\n")[:-1]]  # only whole lines count
    assert proc.returncode == -signal.SIGKILL

    spool = Spool(tmp_path, 1 << 30)
    spool.open()
    publish = Collector()
    await spool.drain(publish)
    await spool.close()
    drained = [k.decode() for k in publish.keys]
    assert set(acked) <= set(drained)
    assert len(drained) == len(set(drained))
    for w in range(16):  # each writer's records: none missing in the middle, in order
        mine = [int(k.split("-")[1]) for k in drained if k.startswith(f"{w}-")]
        assert mine == list(range(len(mine)))


async def test_a_drain_killed_midway_resends_at_most_a_checkpoints_worth(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, segment_max_bytes=8 * 1024)
    spool.open()
    await asyncio.gather(*(spool.append(k, b"v" * 100, []) for k in keys(600)))
    await spool.close()

    proc = subprocess.Popen([sys.executable, "-c", DRAINER, str(tmp_path)],
                            stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    sent: list[str] = []
    while len(sent) < 250:
        line = proc.stdout.readline()
        assert line, "the drainer died on its own"
        sent.append(line.decode().rstrip("\n"))
    proc.send_signal(signal.SIGKILL)
    # Read through the same buffered reader: whole windows are written at once, so it
    # may already hold lines past the 250th.
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait(timeout=10)
    sent += [ln for ln in rest.decode().split("\n")[:-1]]
    assert sent == [k.decode() for k in keys(len(sent))]

    spool = Spool(tmp_path, 1 << 30)
    spool.open()
    publish = Collector()
    await spool.drain(publish)
    await spool.close()
    resent_from = int(publish.keys[0].decode().split("-")[1])
    assert publish.keys == keys(600 - resent_from, start=resent_from)  # nothing lost
    # checkpoint_every (16), plus the window in flight (16)
    assert len(sent) - resent_from <= 16 + 16
