"""The on-disk spool: durable, ordered storage for captures Kafka has not acknowledged.

A capture is appended to the spool when Kafka does not acknowledge it in time; a drain
task later publishes the spooled records to Kafka, oldest first. ``append`` returns only
once the record is fsync'd, so the proxy may then answer ``queued: true``.

On-disk layout (everything inside the configured directory)::

    segment-00000000000000000001.log   append-only segment files, in sequence order
    checkpoint                         drain progress: (segment sequence, byte offset)
    quarantine/<segment>.<offset>.bad  bytes cut from a torn or corrupt segment tail
    .lock                              flock'd while a process has the spool open

Each segment is a run of frames, all integers big-endian::

    offset size field
    0      1    magic      0xD5
    1      1    version    1 (a reader refuses versions it does not know)
    2      2    flags      0 (reserved)
    4      4    length     of the body, in bytes
    8      4    crc32      zlib.crc32 of bytes 0..7 followed by the body
    12     n    body       spooled_at f64 (epoch seconds)
                           key length u32, key
                           value length u32, value
                           header count u16, then per header:
                             name length u16, name (UTF-8), value length u32, value

Crash safety. Records are only ever appended. ``append`` writes a batch of frames and
fsyncs the segment before any append in the batch returns; a new segment's directory
entry is fsync'd when it is created, before anything is written to it. So after a crash
every acknowledged frame is intact on disk, and everything after the last fsync belongs
to appends that never returned. ``open`` verifies every frame (magic, version, length,
checksum, body structure) and stops a segment at the first frame that fails: the bytes
from there on are copied to ``quarantine/`` and fsync'd, and only then is the segment
truncated, so a crash during recovery loses nothing and the next start redoes it. A write
or fsync that fails (ENOSPC, EDQUOT, EIO) truncates the file back to its last fsync'd
size, so a frame is either complete or absent.

The drain only reads a segment up to its last fsync'd size (tracked in memory), so it
may run alongside appends, which go to the newest segment. A segment file is deleted
(and its directory fsync'd) only after every record in it was published. Progress inside
a partly drained segment is kept in ``checkpoint``, replaced atomically (rename) every
few records; it is not fsync'd, because a lost or damaged checkpoint (it carries its own
checksum) only means records are published again, never that one is skipped. Kafka
consumers already tolerate duplicates; they can never recover a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from redrive.errors import RedriveError

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "CorruptFrame",
    "FrameError",
    "IncompleteFrame",
    "RecoveryReport",
    "ScanResult",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpooledRecord",
    "decode_frame",
    "encode_frame",
    "scan_frames",
]

MAGIC = 0xD5
FORMAT_VERSION = 1
_HEAD = struct.Struct(">BBHI")  # magic, version, flags, body length: what the crc covers
_HEADER = struct.Struct(">BBHII")  # ... followed by the crc itself
HEADER_SIZE = _HEADER.size
MAX_BODY_BYTES = 256 * 1024 * 1024
"""Largest body a frame may have: a bound on what a corrupt length field can make us read."""
_BODY_START = struct.Struct(">dI")  # spooled_at, key length
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_MIN_BODY = _BODY_START.size + _U32.size + _U16.size

_SEGMENT_RE = re.compile(r"^segment-(\d{20})\.log$")
_CHECKPOINT = struct.Struct(">4sBQQ")  # magic, version, segment sequence, offset
_CHECKPOINT_MAGIC = b"RDCK"
_READ_CHUNK = 1024 * 1024
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

Buffer = bytes | bytearray | memoryview
_T = TypeVar("_T")
_Bytes = bytes  # Spool.bytes (a property) shadows the type inside the class
PublishBatch = Callable[["Sequence[SpooledRecord]"], Awaitable["Sequence[BaseException | None]"]]
"""The drain's sink: one outcome per record, in order (None = handled)."""


class SpoolError(RedriveError):
    """The spool cannot do its job: unusable directory at start, closed spool, I/O error."""


class SpoolFull(SpoolError):
    """An append was refused (over ``max_bytes``, disk full, record too large); nothing
    of the record is stored."""


# --- the pure part: frames ---------------------------------------------------------


@dataclass(frozen=True)
class SpooledRecord:
    """One captured Kafka record, as stored in the spool."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    spooled_at: float
    """Epoch seconds when the record was appended."""


class FrameError(ValueError):
    """The bytes at ``offset`` are not a complete, valid frame."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.offset = offset
        self.reason = reason


class IncompleteFrame(FrameError):
    """The buffer ends inside a frame that looks valid so far; ``needed`` is the whole
    frame's size (header included)."""

    def __init__(self, offset: int, needed: int) -> None:
        super().__init__(offset, f"incomplete frame ({needed} bytes needed)")
        self.needed = needed


class CorruptFrame(FrameError):
    """The bytes cannot be a frame: bad magic, unknown version, checksum mismatch..."""


def encode_frame(record: SpooledRecord) -> bytes:
    """Frame one record. Raises ValueError when a field is too large for the format."""
    parts = [_BODY_START.pack(record.spooled_at, _fits(len(record.key), 0xFFFFFFFF, "key")),
             record.key, _U32.pack(_fits(len(record.value), 0xFFFFFFFF, "value")),
             record.value, _U16.pack(_fits(len(record.headers), 0xFFFF, "header count"))]
    for name, value in record.headers:
        raw = name.encode("utf-8", "surrogatepass")
        parts += [_U16.pack(_fits(len(raw), 0xFFFF, "header name")), raw,
                  _U32.pack(_fits(len(value), 0xFFFFFFFF, "header value")), value]
    body = b"".join(parts)
    _fits(len(body), MAX_BODY_BYTES, "record")
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(body))
    return head + _U32.pack(zlib.crc32(body, zlib.crc32(head))) + body


def _fits(size: int, limit: int, what: str) -> int:
    if size > limit:
        raise ValueError(f"{what} is too large for a spool frame ({size} > {limit} bytes)")
    return size


def check_frame(buf: Buffer, offset: int = 0) -> int:
    """Verify the frame header and checksum at ``offset``; return the frame's end offset.

    Raises IncompleteFrame when ``buf`` ends before the frame does, CorruptFrame when the
    bytes present already rule out a valid frame.
    """
    avail = len(buf) - offset
    if avail >= 1 and buf[offset] != MAGIC:
        raise CorruptFrame(offset, f"bad magic byte 0x{buf[offset]:02x}")
    if avail >= 2 and buf[offset + 1] != FORMAT_VERSION:
        raise CorruptFrame(offset, f"unsupported format version {buf[offset + 1]}")
    if avail < HEADER_SIZE:
        raise IncompleteFrame(offset, HEADER_SIZE)
    _, _, flags, length, crc = _HEADER.unpack_from(buf, offset)
    if flags:
        raise CorruptFrame(offset, f"unknown flags 0x{flags:04x}")
    if not _MIN_BODY <= length <= MAX_BODY_BYTES:
        raise CorruptFrame(offset, f"implausible body length {length}")
    end: int = offset + HEADER_SIZE + length
    if end > len(buf):
        raise IncompleteFrame(offset, HEADER_SIZE + length)
    view = memoryview(buf)
    actual = zlib.crc32(view[offset + HEADER_SIZE:end], zlib.crc32(view[offset:offset + 8]))
    if actual != crc:
        raise CorruptFrame(offset, "checksum mismatch")
    return end


def decode_frame(buf: Buffer, offset: int = 0) -> tuple[SpooledRecord, int]:
    """Decode the frame at ``offset``; return the record and the frame's end offset.

    Raises IncompleteFrame or CorruptFrame as :func:`check_frame` does.
    """
    end = check_frame(buf, offset)
    pos = offset + HEADER_SIZE

    def take(size: int) -> bytes:
        nonlocal pos
        if pos + size > end:
            raise CorruptFrame(offset, "body shorter than its fields")
        chunk = bytes(buf[pos:pos + size])
        pos += size
        return chunk

    spooled_at, key_len = _BODY_START.unpack(take(_BODY_START.size))
    key = take(key_len)
    value = take(_U32.unpack(take(4))[0])
    headers = []
    for _ in range(_U16.unpack(take(2))[0]):
        raw = take(_U16.unpack(take(2))[0])
        headers.append((raw.decode("utf-8", "surrogatepass"), take(_U32.unpack(take(4))[0])))
    if pos != end:
        raise CorruptFrame(offset, "trailing bytes in body")
    return SpooledRecord(key, value, tuple(headers), spooled_at), end


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan_frames` found at the start of a buffer."""

    records: tuple[SpooledRecord, ...]
    ends: tuple[int, ...]
    """End offset of each record's frame."""
    valid_end: int
    """End of the last valid frame (0 if none): everything before it is good."""
    error: FrameError | None
    """Why scanning stopped before the end of the buffer; None if it ends on a frame."""


def scan_frames(buf: Buffer) -> ScanResult:
    """Decode complete, valid frames from the start of ``buf`` until the first bad one.

    Never raises for any content of ``buf``.
    """
    records: list[SpooledRecord] = []
    ends: list[int] = []
    pos, error = 0, None
    while pos < len(buf):
        try:
            record, pos = decode_frame(buf, pos)
        except FrameError as exc:
            error = exc
            break
        except (UnicodeDecodeError, struct.error) as exc:  # a crc-valid but malformed body
            error = CorruptFrame(pos, f"malformed body: {exc}")
            break
        records.append(record)
        ends.append(pos)
    return ScanResult(tuple(records), tuple(ends), pos, error)


# --- the I/O part ------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`Spool.open` found on disk."""

    records: int
    """Records waiting to be drained."""
    bytes: int
    """Bytes of segment files on disk (frame overhead and drained records included)."""
    segments: int
    quarantined_files: tuple[str, ...]
    """Paths of the files written to ``quarantine/`` during this open."""
    quarantined_bytes: int


@dataclass(eq=False)
class _Segment:
    seq: int
    path: Path
    size: int = 0
    """Bytes known to be fsync'd: readers never look past this."""
    records: int = 0
    drained_offset: int = 0
    drained_records: int = 0
    next_spooled_at: float | None = None
    """spooled_at of the first record not yet drained (None when there is none)."""
    fd: int | None = None

    @property
    def pending(self) -> int:
        return self.records - self.drained_records


@dataclass(eq=False)
class _Pending:
    frame: bytes
    spooled_at: float
    future: asyncio.Future[None]


class _WriteFailed(Exception):
    def __init__(self, cause: OSError, truncated: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.truncated = truncated


def _segment_name(seq: int) -> str:
    return f"segment-{seq:020d}.log"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append_durably(fd: int, data: bytes, durable_size: int) -> None:
    """Append and fsync; on failure cut the file back to ``durable_size``."""
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        try:
            os.ftruncate(fd, durable_size)
            os.fsync(fd)
        except OSError:
            raise _WriteFailed(exc, truncated=False) from exc
        raise _WriteFailed(exc, truncated=True) from exc


def _pread_all(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks, got = [], 0
        while got < length:
            chunk = os.pread(fd, length - got, offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_frames(path: Path, start: int, stop: int,
                 chunk: int = _READ_CHUNK) -> tuple[ScanResult, FrameError | None]:
    """Scan the frames of ``path`` in [start, stop), about one chunk's worth (at least one
    whole frame when there is one). Offsets in the result are relative to ``start``.
    The second item is the real problem at ``start + valid_end``, if any: an incomplete
    frame that merely runs past the chunk read is not one."""
    length = min(chunk, stop - start)
    while True:
        data = _pread_all(path, start, length)
        result = scan_frames(data)
        err = result.error
        if not isinstance(err, IncompleteFrame):
            return result, err
        if err.offset + err.needed > stop - start or len(data) < length:
            return result, err  # the frame runs past the end: torn
        if result.records:
            return result, None  # the chunk boundary cut a frame: read on next time
        length = min(stop - start, max(2 * length, err.needed))


def _copy_to(path: Path, offset: int, size: int, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pos = offset
        while pos < size:
            chunk = _pread_all(path, pos, min(_READ_CHUNK, size - pos))
            if not chunk:
                break
            _write_all(fd, chunk)
            pos += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(dest.parent)


class Spool:
    """An append-only, fsync'd, size-capped on-disk queue of records (see the module doc).

    Call :meth:`open` once (synchronously, at startup), then :meth:`append` and
    :meth:`drain` from one event loop, then :meth:`close`.
    """

    def __init__(self, directory: Path, max_bytes: int, *,
                 segment_max_bytes: int = 16 * 1024 * 1024,
                 clock: Callable[[], float] = time.time,
                 checkpoint_every: int = 16, window_records: int = 4096,
                 window_bytes: int = 8 * 1024 * 1024) -> None:
        """``max_bytes`` caps the segment files on disk, frame overhead included.
        ``segment_max_bytes`` is when to start a new segment (a record larger than that
        gets a segment of its own). ``checkpoint_every``: drain progress is saved after
        that many records, which bounds the records re-sent after a crash (the drain
        saves after each window, so at most one window is re-sent). ``window_records`` and
        ``window_bytes`` bound what one drain step hands to ``publish`` at once."""
        if max_bytes <= 0 or segment_max_bytes <= 0 or checkpoint_every <= 0:
            raise ValueError("max_bytes, segment_max_bytes and checkpoint_every must be > 0")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_max = segment_max_bytes
        self._clock = clock
        self._checkpoint_every = checkpoint_every
        self._window_records = max(1, window_records)
        self._window_bytes = max(1, window_bytes)
        self._state = "new"  # new -> open -> closing -> closed
        self._broken = False
        self._lock_fd: int | None = None
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._next_seq = 1
        self._disk_bytes = 0
        self._reserved = 0
        self._records = 0
        self._queue: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._drain_lock = asyncio.Lock()
        self._unsaved = 0  # records drained since the last checkpoint

    # --- state -----------------------------------------------------------------------

    @property
    def records(self) -> int:
        """Records spooled and not yet drained."""
        return self._records

    @property
    def bytes(self) -> int:
        """Bytes of segment files on disk (what ``max_bytes`` caps)."""
        return self._disk_bytes

    @property
    def oldest_spooled_at(self) -> float | None:
        """Epoch seconds when the oldest undrained record was spooled; None when empty."""
        for seg in self._segments:
            if seg.pending:
                return seg.next_spooled_at
        return None

    @property
    def directory(self) -> Path:
        return self._dir

    # --- open ------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Check the directory, lock it, and recover what is on disk. Blocking; call once.

        Raises SpoolError when the directory is missing, not a directory, not writable,
        full, used by another process, or cannot be read.
        """
        if self._state != "new":
            raise SpoolError("the spool was already opened")
        self._check_directory()
        self._lock_fd = self._lock()
        try:
            report = self._recover()
        except OSError as exc:
            self._unlock()
            raise SpoolError(f"cannot recover the spool in {self._dir}: {exc}") from exc
        self._state = "open"
        log.info("spool opened", extra={
            "spool_dir": str(self._dir), "records": report.records, "bytes": report.bytes,
            "segments": report.segments, "quarantined_bytes": report.quarantined_bytes})
        return report

    def _check_directory(self) -> None:
        where = self._dir
        try:
            st = os.stat(where)
        except FileNotFoundError:
            raise SpoolError(f"spool directory {where} does not exist") from None
        except OSError as exc:
            raise SpoolError(f"spool directory {where} is not usable: {exc.strerror}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"spool directory {where} is not a directory")
        # Permission bits say nothing for root or on a read-only mount: try it for real.
        probe = where / f".probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, b"redrive spool probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(probe)
            _fsync_dir(where)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(probe)
            if exc.errno in _FULL_ERRNOS:
                raise SpoolError(f"spool directory {where} is full ({exc.strerror})") from exc
            raise SpoolError(
                f"spool directory {where} is not writable ({exc.strerror or exc})") from exc

    def _lock(self) -> int:
        try:
            fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot lock spool directory {self._dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolError(f"spool directory {self._dir} is in use by another process "
                             f"({exc.strerror})") from exc
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _recover(self) -> RecoveryReport:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir / "checkpoint.tmp")
        checkpoint = self._read_checkpoint()
        seqs = sorted(int(m.group(1)) for name in os.listdir(self._dir)
                      if (m := _SEGMENT_RE.match(name)) and (self._dir / name).is_file())
        quarantined: list[str] = []
        quarantined_bytes = 0
        removed_empty = False
        for seq in seqs:
            seg = _Segment(seq, self._dir / _segment_name(seq))
            mark = checkpoint[1] if checkpoint and checkpoint[0] == seq else 0
            bad_at = self._scan_segment(seg, mark)
            if bad_at is not None:
                size = os.path.getsize(seg.path)
                dest = self._quarantine_dir() / f"{seg.path.name}.{bad_at[0]}.bad"
                _copy_to(seg.path, bad_at[0], size, dest)
                fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, bad_at[0])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                quarantined.append(str(dest))
                quarantined_bytes += size - bad_at[0]
                log.warning("spool segment has a torn or corrupt tail; quarantined it", extra={
                    "segment": seg.path.name, "offset": bad_at[0], "bytes": size - bad_at[0],
                    "reason": bad_at[1], "quarantine_file": str(dest)})
            if seg.size == 0:
                os.unlink(seg.path)
                removed_empty = True
                continue
            self._segments.append(seg)
            self._disk_bytes += seg.size
            self._records += seg.pending
        if removed_empty:
            _fsync_dir(self._dir)
        # Never reuse a sequence number a (possibly stale) checkpoint could point into.
        self._next_seq = max([*seqs, checkpoint[0] if checkpoint else 0]) + 1
        return RecoveryReport(self._records, self._disk_bytes, len(self._segments),
                              tuple(quarantined), quarantined_bytes)

    def _scan_segment(self, seg: _Segment, mark: int) -> tuple[int, str] | None:
        """Count the valid frames of ``seg`` and apply the checkpoint ``mark`` if it is a
        frame boundary. Returns (offset, reason) of a bad tail, if there is one."""
        size = os.path.getsize(seg.path)
        first_ts: float | None = None
        mark_ts: float | None = None
        mark_records = 0 if mark == 0 else None
        while seg.size < size:
            start = seg.size
            result, problem = _read_frames(seg.path, start, size)
            for record, end in zip(result.records, result.ends, strict=True):
                if first_ts is None:
                    first_ts = record.spooled_at
                if seg.size == mark:
                    mark_ts = record.spooled_at
                seg.size = start + end
                seg.records += 1
                if seg.size == mark:
                    mark_records = seg.records
            if problem is None and not result.records:  # cannot happen; never spin
                problem = CorruptFrame(start, "no progress scanning")
            if problem is not None:
                break
        else:
            problem = None
        if mark_records is None:
            log.warning("spool checkpoint is not at a record boundary; ignoring it",
                        extra={"segment": seg.path.name, "offset": mark})
            mark, mark_records, mark_ts = 0, 0, first_ts
        seg.drained_offset, seg.drained_records = mark, mark_records
        seg.next_spooled_at = mark_ts if seg.pending else None
        if problem is None:
            return None
        return seg.size, problem.reason

    def _quarantine_dir(self) -> Path:
        qdir = self._dir / "quarantine"
        if not qdir.is_dir():
            os.mkdir(qdir, 0o700)
            _fsync_dir(self._dir)
        return qdir

    def _read_checkpoint(self) -> tuple[int, int] | None:
        try:
            data = (self._dir / "checkpoint").read_bytes()
        except FileNotFoundError:
            return None
        body, crc = data[:_CHECKPOINT.size], data[_CHECKPOINT.size:]
        if len(body) != _CHECKPOINT.size or crc != _U32.pack(zlib.crc32(body)):
            log.warning("spool checkpoint is damaged; ignoring it (records may be re-sent)")
            return None
        magic, version, seq, offset = _CHECKPOINT.unpack(body)
        if magic != _CHECKPOINT_MAGIC or version != 1:
            log.warning("spool checkpoint has an unknown format; ignoring it")
            return None
        return seq, offset

    def _write_checkpoint(self, seq: int, offset: int) -> None:
        body = _CHECKPOINT.pack(_CHECKPOINT_MAGIC, 1, seq, offset)
        tmp = self._dir / "checkpoint.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, body + _U32.pack(zlib.crc32(body)))
        finally:
            os.close(fd)
        os.replace(tmp, self._dir / "checkpoint")

    # --- append ----------------------------------------------------------------------

    async def append(self, key: _Bytes, value: _Bytes,
                     headers: Sequence[tuple[str, _Bytes]]) -> None:
        """Store one record; return once it is fsync'd.

        Appends that arrive while a batch is being written share the next write and
        fsync (group commit). Raises SpoolFull when the record would take the spool past
        ``max_bytes``, when the disk is full (ENOSPC, EDQUOT) or when the record is too
        large for a frame; SpoolError on other I/O errors or when the spool is not open.
        In every error case nothing of the record is left in the spool. If the caller is
        cancelled, the record may still be stored (and later drained).
        """
        if self._state != "open" or self._broken:
            raise SpoolError(f"the spool in {self._dir} is not open")
        spooled_at = self._clock()
        try:
            frame = encode_frame(SpooledRecord(key, value, tuple(headers), spooled_at))
        except ValueError as exc:
            raise SpoolFull(f"record cannot be spooled: {exc}") from exc
        used = self._disk_bytes + self._reserved
        if used + len(frame) > self._max_bytes:
            raise SpoolFull(f"spool is full: {used} of {self._max_bytes} bytes in use, "
                            f"the record needs {len(frame)}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(frame, spooled_at, future))
        self._reserved += len(frame)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="spool-flush")
        await future

    async def _flush(self) -> None:
        """Write queued frames in batches, one write and one fsync per batch, until the
        queue is empty. A batch never spans two segments."""
        while self._queue:
            async with self._write_lock:
                batch: list[_Pending] = []
                try:
                    seg = await self._writable_segment(len(self._queue[0].frame))
                    nbytes = 0
                    while self._queue and (not batch or seg.size + nbytes
                                           + len(self._queue[0].frame) <= self._segment_max):
                        batch.append(self._queue.popleft())
                        nbytes += len(batch[-1].frame)
                    assert seg.fd is not None
                    await asyncio.to_thread(_append_durably, seg.fd,
                                            b"".join(p.frame for p in batch), seg.size)
                except _WriteFailed as exc:
                    self._write_failed(seg, batch, exc)
                except OSError as exc:  # creating a segment failed: the whole queue would
                    batch += self._queue
                    self._queue.clear()
                    self._fail(batch, exc, "cannot create a spool segment")
                except asyncio.CancelledError:
                    # The write may still complete in its thread: stop appending for good
                    # rather than guess the file size. The next open() rescans the files.
                    self._broken = True
                    batch += self._queue
                    self._queue.clear()
                    self._fail(batch, None, "the spool writer was cancelled")
                    raise
                except Exception as exc:
                    log.exception("unexpected error in the spool writer")
                    self._fail(batch, None, f"unexpected spool error: {exc!r}")
                else:
                    if not seg.pending:
                        seg.next_spooled_at = batch[0].spooled_at
                    seg.size += nbytes
                    seg.records += len(batch)
                    self._disk_bytes += nbytes
                    self._reserved -= nbytes
                    self._records += len(batch)
                    for p in batch:
                        if not p.future.done():
                            p.future.set_result(None)

    async def _writable_segment(self, first_frame: int) -> _Segment:
        seg = self._active
        if seg is not None and (seg.size == 0 or seg.size + first_frame <= self._segment_max):
            return seg
        if seg is not None:
            self._retire(seg)
        seq = self._next_seq
        self._next_seq += 1
        path = self._dir / _segment_name(seq)
        fd = await asyncio.to_thread(self._create_segment, path)
        seg = _Segment(seq, path, fd=fd)
        self._segments.append(seg)
        self._active = seg
        return seg

    def _create_segment(self, path: Path) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            _fsync_dir(self._dir)  # the file must survive a crash before its records count
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return fd

    def _retire(self, seg: _Segment) -> None:
        """Stop appending to ``seg`` (it stays until drained)."""
        if self._active is seg:
            self._active = None
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None

    def _write_failed(self, seg: _Segment, batch: list[_Pending], exc: _WriteFailed) -> None:
        if not exc.truncated:
            # The file may end in a partial frame: never append after it. Readers stop at
            # seg.size, and the next open() quarantines the garbage.
            self._retire(seg)
        full = exc.cause.errno in _FULL_ERRNOS
        log.warning("spool write failed; the records in the batch were not stored", extra={
            "segment": seg.path.name, "records": len(batch), "error": str(exc.cause),
            "truncated": exc.truncated})
        self._fail(batch, exc.cause, "disk full while spooling" if full
                   else f"cannot write spool segment {seg.path}")

    def _fail(self, batch: list[_Pending], cause: OSError | None, message: str) -> None:
        full = cause is not None and cause.errno in _FULL_ERRNOS
        detail = f"{message} ({cause.strerror or cause})" if cause is not None else message
        for p in batch:
            self._reserved -= len(p.frame)
            if not p.future.done():
                p.future.set_exception(SpoolFull(detail) if full else SpoolError(detail))

    # --- drain -----------------------------------------------------------------------

    async def drain(self, publish: PublishBatch, *, max_records: int | None = None) -> int:
        """Publish spooled records oldest first, in order, a window of many at a time.

        ``publish`` gets a window of records (at most ``window_records`` of them and about
        ``window_bytes`` of values) and answers, for each in order, None when the record
        is handled (published, or set aside by the caller) or the exception that stopped
        it. The spool advances over the leading run of handled records; at the first
        failure draining stops, that record and the rest stay spooled (the ones after it
        that were published are published again later: duplicates, never a gap) and the
        exception propagates. Fully drained segments are deleted. Returns how many records
        were handled. Stops early when the spool is being closed. Only one drain runs at a
        time (others wait). Raises SpoolError if a segment cannot be read or deleted.
        """
        if self._state != "open":
            raise SpoolError(f"the spool in {self._dir} is not open")
        async with self._drain_lock:
            published = 0
            seg: _Segment | None = None
            try:
                while self._segments and self._state == "open":
                    seg = self._segments[0]
                    if seg.drained_offset >= seg.size:
                        if seg is self._active:
                            if self._broken:
                                break
                            async with self._write_lock:  # waits out a write in flight
                                if seg is not self._active or seg.drained_offset < seg.size:
                                    continue  # new records arrived: read them
                                self._retire(seg)
                        await self._delete(seg)
                        continue
                    if max_records is not None and published >= max_records:
                        break
                    published += await self._drain_some(seg, publish, max_records, published)
            finally:
                if self._unsaved and seg is not None and seg in self._segments:
                    await self._save_checkpoint(seg)
            return published

    async def _drain_some(self, seg: _Segment, publish: PublishBatch,
                          max_records: int | None, published: int) -> int:
        """Publish the records of one chunk of ``seg``, window by window; return how many."""
        start, stop, stop_records = seg.drained_offset, seg.size, seg.records
        result, problem = await self._io(_read_frames, seg.path, start, stop,
                                         self._window_bytes)
        if result.records:
            seg.next_spooled_at = result.records[0].spooled_at
        records, ends = result.records, result.ends
        count, i = 0, 0
        while i < len(records):
            if self._state != "open":
                return count
            room = len(records) - i
            if max_records is not None:
                room = min(room, max_records - published - count)
            if room <= 0:
                return count
            j, size = i, 0
            while j < i + min(room, self._window_records) and (
                    j == i or size + len(records[j].value) <= self._window_bytes):
                size += len(records[j].value)
                j += 1
            outcomes = await publish(records[i:j])
            done = 0
            for outcome in outcomes:
                if outcome is not None:
                    break
                done += 1
            if done:
                count += done
                i += done
                seg.drained_offset = start + ends[i - 1]
                seg.drained_records += done
                self._records -= done
                if i < len(records):
                    seg.next_spooled_at = records[i].spooled_at
                elif seg.drained_offset >= seg.size:
                    seg.next_spooled_at = None
                self._unsaved += done
                if self._unsaved >= self._checkpoint_every:
                    await self._save_checkpoint(seg)
            if done < len(outcomes):
                failure = outcomes[done]
                assert failure is not None
                raise failure
        if problem is not None:
            # Bytes we fsync'd ourselves no longer verify (disk corruption, or an outside
            # writer): set them aside rather than stall the drain on them forever.
            bad_at = start + result.valid_end
            dest = await self._io(self._quarantine_range, seg.path, bad_at, stop)
            lost = stop_records - seg.drained_records
            log.error("spool segment is corrupt; quarantined the rest of it", extra={
                "segment": seg.path.name, "offset": bad_at, "records": lost,
                "reason": problem.reason, "quarantine_file": str(dest)})
            seg.drained_offset, seg.drained_records = stop, stop_records
            seg.next_spooled_at = None
            self._records -= lost
        return count

    async def _io(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run blocking file I/O of the drain in a thread; OSError becomes SpoolError (only
        ours: an OSError from ``publish``, such as ConnectionError, passes unchanged)."""
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise SpoolError(f"cannot drain the spool in {self._dir}: {exc}") from exc

    def _quarantine_range(self, path: Path, offset: int, stop: int) -> Path:
        dest = self._quarantine_dir() / f"{path.name}.{offset}.bad"
        _copy_to(path, offset, stop, dest)
        return dest

    async def _delete(self, seg: _Segment) -> None:
        def unlink() -> None:
            os.unlink(seg.path)
            _fsync_dir(self._dir)

        await self._io(unlink)
        self._segments.remove(seg)
        self._disk_bytes -= seg.size
        self._records -= seg.pending  # zero unless a drained segment was cut short
        self._unsaved = 0

    async def _save_checkpoint(self, seg: _Segment) -> None:
        try:
            await asyncio.to_thread(self._write_checkpoint, seg.seq, seg.drained_offset)
        except OSError as exc:  # only costs duplicates after a restart: keep draining
            log.warning("cannot save the spool drain checkpoint", extra={"error": str(exc)})
        else:
            self._unsaved = 0

    # --- close -----------------------------------------------------------------------

    async def close(self) -> None:
        """Finish the appends already accepted (fsync'd), then release the directory.
        Safe to call more than once; later appends raise SpoolError."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        async with self._write_lock:
            if self._active is not None:
                self._retire(self._active)
        self._unlock()
        self._state = "closed"
