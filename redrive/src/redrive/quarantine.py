"""Quarantine files: records Kafka refused for good, set aside instead of retried forever.

When a produce fails for a reason that cannot change (:func:`redrive.kafka.publish_error`
says ``retriable=False``: too large, invalid, not authorised), the sidecar's spool drain
and the retry worker append the record here and move on; nothing is dropped. An operator
lists, inspects and replays them with ``redrive quarantine list|show|replay --dir DIR``
(for example after raising the topic's ``max.message.bytes``).

Format: one JSON object per line, UTF-8, in ``<dir>/records.jsonl`` (mode 0600)::

    {"id": "<record key as text>", "at": 1764300000.0, "reason": "too_large",
     "detail": "...", "topic": "failed-requests", "bytes": 1234,
     "key": "<base64>", "value": "<base64>", "headers": [["redrive-version", "<base64>"]]}

Appends are written and fsync'd before the caller counts the record as handled; a torn
last line (a crash mid-write) is skipped by readers and reported, never fatal. Readers
stream the file line by line, so its size never matters.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "records.jsonl"


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One record Kafka refused for good, with why and where it was going."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    detail: str
    at: float

    @property
    def id(self) -> str:
        return self.key.decode("utf-8", "replace")

    def to_line(self) -> bytes:
        return json.dumps({
            "id": self.id, "at": self.at, "reason": self.reason, "detail": self.detail,
            "topic": self.topic, "bytes": len(self.value),
            "key": base64.b64encode(self.key).decode(),
            "value": base64.b64encode(self.value).decode(),
            "headers": [[name, base64.b64encode(value).decode()]
                        for name, value in self.headers],
        }, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Quarantined:
        """Raises ValueError when the line is not an entry (torn or foreign)."""
        try:
            obj = json.loads(line)
            return cls(topic=str(obj["topic"]), key=base64.b64decode(obj["key"]),
                       value=base64.b64decode(obj["value"]),
                       headers=tuple((str(n), base64.b64decode(v)) for n, v in obj["headers"]),
                       reason=str(obj["reason"]), detail=str(obj.get("detail", "")),
                       at=float(obj["at"]))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a quarantine entry: {exc}") from None


def path_in(directory: Path) -> Path:
    return Path(directory) / FILE_NAME


def append(directory: Path, entries: Sequence[Quarantined]) -> None:
    """Append ``entries`` to the directory's file and fsync it (blocking: call from a
    thread). Creates the directory (0700) and the file (0600) when missing. Raises
    OSError when the bytes cannot be made durable."""
    if not entries:
        return
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = path_in(directory)
    new_file = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        data = b"".join(entry.to_line() for entry in entries)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new_file or created:
        _fsync_dir(directory)


def read(directory: Path) -> Iterator[Quarantined | ValueError]:
    """Every entry of the directory's file, in order, streamed; a line that does not
    parse is yielded as the ValueError saying why. Nothing when there is no file."""
    path = path_in(directory)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if line.strip():
                try:
                    yield Quarantined.from_line(line)
                except ValueError as exc:
                    yield exc


def remove(directory: Path, ids: Iterable[str]) -> int:
    """Rewrite the file without the entries whose id is in ``ids`` (atomically: a new file
    renamed over the old one); lines that do not parse are kept. Returns how many
    entries were removed."""
    gone = set(ids)
    path = path_in(directory)
    if not gone or not path.exists():
        return 0
    tmp = path.with_suffix(".tmp")
    removed = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(path, "rb") as source:
            for line in source:
                with contextlib.suppress(ValueError):
                    if Quarantined.from_line(line).id in gone:
                        removed += 1
                        continue
                os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(directory))
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
