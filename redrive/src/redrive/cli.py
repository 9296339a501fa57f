"""redrive: the operator CLI. Follow the capture topic; list, show and replay dead letters.

Every option can also come from the environment under the name the services use:
``--kafka-bootstrap-servers`` is ``REDRIVE_KAFKA_BOOTSTRAP_SERVERS``, ``--topic`` is
``REDRIVE_TOPIC`` and so on; a flag wins over the variable. Exit codes: 0 success,
1 a runtime failure (Kafka unreachable, no such record), 2 bad flags or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fnmatch
import getpass
import json
import logging
import os
import socket
import sys
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from redrive import __version__, cli_status, quarantine
from redrive.cli_kafka import (
    CliError,
    Message,
    follow,
    publish,
    publisher,
    read_each,
)
from redrive.deadletter import (
    MALFORMED,
    REJECTED,
    REPLAYED,
    Letter,
    read_letter,
    replay_marker,
)
from redrive.envelope import KAFKA_HEADERS, Record, encode
from redrive.envelope import decode as decode_record
from redrive.errors import ConfigError, RecordError
from redrive.quarantine import Quarantined
from redrive.settings import Env, KafkaSettings, SecuritySettings
from redrive.signing import SigningKeys, with_signature

FILTER_KEYS = ("reason", "method", "path", "status", "kind", "id")

EPILOG = """\
environment: every option reads REDRIVE_<OPTION> when the flag is absent, e.g.
  REDRIVE_KAFKA_BOOTSTRAP_SERVERS, REDRIVE_TOPIC, REDRIVE_DLQ_TOPIC,
  REDRIVE_KAFKA_TIMEOUT_SECONDS.

examples:
  redrive tail
  redrive dlq list --filter reason=max_attempts
  redrive dlq show 0192f4c8-...
  redrive dlq replay --all --filter method=POST --filter path='/api/*' --dry-run
  redrive dlq replay --id 0192f4c8-... --rate 5
  redrive status 0192f4c8-... --status-url http://localhost:9080
  redrive quarantine list --dir /var/spool/redrive/quarantine
"""


@dataclass(frozen=True)
class CliSettings:
    kafka: KafkaSettings
    timeout_seconds: float
    """Longest wait for Kafka (connect, metadata, no-progress while reading)."""
    signing: SigningKeys | None = None
    """``REDRIVE_SIGNING_KEY``: records ``dlq replay`` writes are signed with its first key."""
    status_url: str | None = None
    """``REDRIVE_STATUS_URL``: ``redrive status`` asks this status API."""
    status_topic: str = ""
    """``REDRIVE_STATUS_TOPIC``: ``redrive status`` reads it without a status URL."""


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a flag given before the subcommand is not overwritten by the default of the
    # same flag on the subcommand's parser.
    group = parser.add_argument_group("connection (also REDRIVE_* variables)")
    group.add_argument("--kafka-bootstrap-servers", metavar="HOST:PORT[,...]",
                       default=argparse.SUPPRESS, help="default localhost:9092")
    group.add_argument("--topic", default=argparse.SUPPRESS,
                       help="capture topic (default failed-requests)")
    group.add_argument("--dlq-topic", default=argparse.SUPPRESS,
                       help="dead-letter topic (default failed-requests.dlq)")
    group.add_argument("--kafka-timeout-seconds", metavar="SECONDS", default=argparse.SUPPRESS,
                       help="longest wait for Kafka (default 10)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _common(common)
    parser = argparse.ArgumentParser(
        prog="redrive", parents=[common], description=__doc__.split("\n\n")[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"redrive {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tail = commands.add_parser("tail", parents=[common],
                               help="follow the capture topic, one line a record")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest record instead of new ones")
    tail.add_argument("--max-records", type=_positive_int, metavar="N",
                      help="stop after N records")
    tail.add_argument("--json", action="store_true", help="print each record's JSON")

    dlq = commands.add_parser("dlq", help="inspect and replay dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    listing = dlq_commands.add_parser(
        "list", parents=[common], help="a table of dead letters: id, age, method, path, "
                                       "reason, attempts")
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--include-replayed", action="store_true",
                         help="also list letters already put back on the capture topic")

    show = dlq_commands.add_parser("show", parents=[common],
                                   help="one dead letter in full (sealed headers stay sealed)")
    show.add_argument("id", metavar="ID", help="record id (a unique prefix is enough)")

    again = dlq_commands.add_parser(
        "replay", parents=[common],
        help="put dead letters back on the capture topic with their attempts reset")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID",
                       help="replay this record (repeatable)")
    which.add_argument("--all", action="store_true",
                       help="replay every letter that matches the filters")
    _filters(again)
    again.add_argument("--dry-run", action="store_true",
                       help="print what would be replayed and change nothing")
    again.add_argument("--rate", type=_non_negative_float, default=0.0, metavar="N",
                       help="records per second at most (default: no limit; the worker "
                            "applies REDRIVE_REPLAY_RATE to the replays themselves)")
    again.add_argument("--by", default=None,
                       help="who is replaying, noted in each record (default user@host)")

    status = commands.add_parser(
        "status", parents=[common],
        help="what became of one captured request: queued, retrying, delivered or "
             "dead_lettered (exit 0 found, 1 not found)")
    status.add_argument("id", metavar="ID", help="the capture id (X-Redrive-Id)")
    status.add_argument("--status-url", default=argparse.SUPPRESS, metavar="URL",
                        help="a retry worker's status API, e.g. http://localhost:9080 "
                             "(REDRIVE_STATUS_URL); without it the status topic is read")
    status.add_argument("--status-topic", default=argparse.SUPPRESS,
                        help="status topic read without --status-url "
                             "(REDRIVE_STATUS_TOPIC; default <topic>.status)")
    _quarantine_parser(commands, common)
    return parser


def _quarantine_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    place = argparse.ArgumentParser(add_help=False)
    place.add_argument("--dir", required=True, type=Path, metavar="DIR",
                       help="the quarantine directory (the sidecar's is "
                            "<REDRIVE_SPOOL_DIR>/quarantine, the worker's "
                            "REDRIVE_QUARANTINE_DIR)")
    q = commands.add_parser("quarantine",
                            help="records Kafka refused for good: list, show, replay")
    q_commands = q.add_subparsers(dest="quarantine_command", metavar="COMMAND",
                                  required=True)
    listing = q_commands.add_parser("list", parents=[common, place],
                                    help="a table: id, age, reason, topic, bytes")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = q_commands.add_parser("show", parents=[common, place],
                                 help="one quarantined record in full (value as text or "
                                      "base64)")
    show.add_argument("id", metavar="ID", help="record id (a unique prefix is enough)")
    again = q_commands.add_parser(
        "replay", parents=[common, place],
        help="publish quarantined records to their topic again, then remove them")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID",
                       help="replay this record (repeatable)")
    which.add_argument("--all", action="store_true", help="replay every record")
    again.add_argument("--dry-run", action="store_true",
                       help="print what would be replayed and change nothing")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", action="append", dest="filters", default=[],
                        metavar="KEY=VALUE", type=_filter,
                        help=f"keep letters whose KEY matches VALUE; KEY is one of "
                             f"{', '.join(FILTER_KEYS)}; VALUE may use * and ?; "
                             "repeat to require all")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def _filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or key not in FILTER_KEYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
    return key, value


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> CliSettings:
    """Flags over ``REDRIVE_*`` variables, validated like the services do (ConfigError)."""
    merged = dict(environ)
    for flag in ("kafka_bootstrap_servers", "topic", "dlq_topic", "kafka_timeout_seconds",
                 "status_url", "status_topic"):
        value = getattr(args, flag, None)
        if value is not None:
            merged["REDRIVE_" + flag.upper()] = value
    env = Env(merged)
    kafka = KafkaSettings.from_env(env)
    timeout = env.number("REDRIVE_KAFKA_TIMEOUT_SECONDS", 10.0, positive=True, maximum=3600)
    security = SecuritySettings.from_env(env)
    status_url, status_topic = cli_status.settings(env, kafka.topic)
    env.check()
    return CliSettings(kafka=kafka, timeout_seconds=timeout, signing=security.signing_keys,
                       status_url=status_url, status_topic=status_topic)


# -- letters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    letter: Letter
    message: Message


def latest_by_id(messages: Sequence[Message]) -> list[Entry]:
    """One entry per id, the newest (a record's letters share a key, so a partition)."""
    latest: dict[str, Entry] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        letter = read_letter(m.value, m.key)
        latest.pop(letter.id, None)
        latest[letter.id] = Entry(letter, m)
    return sorted(latest.values(), key=lambda e: (e.letter.at or e.message.timestamp_ms / 1000))


def _id_of(m: Message) -> str:
    """The letter id of a DLQ message (not always its key: a malformed letter keeps the
    original record's key)."""
    return read_letter(m.value, m.key).id


def matches(letter: Letter, filters: Sequence[tuple[str, str]]) -> bool:
    record = letter.record
    facts: dict[str, str] = {"reason": letter.reason, "id": letter.id}
    if record is not None:
        last = letter.attempts[-1] if letter.attempts else None
        facts |= {"method": record.method, "path": record.path or record.uri,
                  "kind": record.error.kind,
                  "status": str(last.status) if last and last.status is not None else ""}
    for key, pattern in filters:
        value = facts.get(key, "")
        fold = key == "method"  # methods compare case-insensitively
        if not fnmatch.fnmatchcase(value.upper() if fold else value,
                                   pattern.upper() if fold else pattern):
            return False
    return True


def age(seconds: float) -> str:
    """``45s``, ``3m12s``, ``5h03m``, ``2d04h``: two units at most."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def table(rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                  .rstrip() + "\n")


def letter_row(letter: Letter, now: float) -> list[str]:
    record = letter.record
    if record is None:
        return [letter.id, age(now - letter.at) if letter.at else "?", "-", "-",
                letter.reason, "0"]
    path = record.path or record.uri
    return [letter.id, age(now - record.timestamp), record.method,
            path if len(path) <= 48 else path[:45] + "...", letter.reason,
            str(len(letter.attempts))]


def letter_summary(letter: Letter) -> dict[str, Any]:
    record = letter.record
    return {"id": letter.id, "reason": letter.reason, "detail": letter.detail,
            "dead_lettered_at": letter.at,
            "captured_at": record.timestamp if record else None,
            "method": record.method if record else None,
            "path": (record.path or record.uri) if record else None,
            "attempts": [a.to_dict() for a in letter.attempts]}


# -- commands ------------------------------------------------------------------------------


async def cmd_tail(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    count = 0
    async for m in follow(settings.kafka, settings.kafka.topic, settings.timeout_seconds,
                          from_beginning=args.from_beginning):
        if args.json:
            out.write(m.value.decode("utf-8", "replace") + "\n")
        else:
            out.write(tail_line(m) + "\n")
        out.flush()
        count += 1
        if args.max_records is not None and count >= args.max_records:
            break
    return 0


def tail_line(m: Message) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.timestamp_ms / 1000))
    try:
        r = decode_record(m.value)
    except RecordError as exc:
        return f"{when}  {m.partition}/{m.offset}  <not a record: {str(exc)[:120]}>"
    status = f" {r.error.status}" if r.error.status is not None else ""
    return (f"{when}  {r.id}  {r.method} {r.uri}  attempt={r.attempt}  "
            f"{r.error.kind}{status}")


async def cmd_list(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    """Streams the DLQ: per id only the newest letter's table row and summary are kept,
    never the letters themselves, so memory grows with ids, not with bodies."""
    now = time.time()
    latest: dict[str, tuple[float, bool, list[str], dict[str, Any]]] = {}
    async for m in read_each(settings.kafka, settings.kafka.dlq_topic,
                             settings.timeout_seconds):
        letter = read_letter(m.value, m.key)
        latest.pop(letter.id, None)
        shown = ((args.include_replayed or letter.reason != REPLAYED)
                 and matches(letter, args.filters))
        latest[letter.id] = (letter.at or m.timestamp_ms / 1000, shown,
                             letter_row(letter, now), letter_summary(letter))
    entries = sorted((v for v in latest.values() if v[1]), key=lambda v: v[0])
    if args.json:
        for _, _, _, summary in entries:
            out.write(json.dumps(summary) + "\n")
        return 0
    if not entries:
        out.write(f"no dead letters on {settings.kafka.dlq_topic}\n")
        return 0
    rows = [["ID", "AGE", "METHOD", "PATH", "REASON", "ATTEMPTS"]]
    rows += [row for _, _, row, _ in entries]
    table(rows, out)
    return 0


def find(entries: Sequence[Entry], wanted: str) -> Entry:
    exact = [e for e in entries if e.letter.id == wanted]
    found = exact or [e for e in entries if e.letter.id.startswith(wanted)]
    if not found:
        raise CliError(f"no dead letter with id {wanted!r}")
    if len(found) > 1:
        raise CliError(f"{wanted!r} matches {len(found)} dead letters; give more of the id")
    return found[0]


async def cmd_show(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    # Streamed: only letters whose id starts with the one asked for are kept.
    messages = [m async for m in read_each(settings.kafka, settings.kafka.dlq_topic,
                                           settings.timeout_seconds)
                if _id_of(m).startswith(args.id)]
    entry = find(latest_by_id(messages), args.id)
    if entry.letter.raw is None:
        out.write(entry.message.value.decode("utf-8", "replace") + "\n")
    else:
        # Printed as stored: sealed_headers stays ciphertext, redacted headers stay absent.
        out.write(json.dumps(entry.letter.raw, indent=2, ensure_ascii=False) + "\n")
    out.write(f"# {settings.kafka.dlq_topic} partition {entry.message.partition} "
              f"offset {entry.message.offset}\n")
    return 0


def replayable(entry: Entry) -> bool:
    # A record the worker refused as unsigned or forged is never re-signed and replayed.
    return (entry.letter.record is not None and entry.letter.reason != REPLAYED
            and entry.letter.reason not in REJECTED)


def back_on_the_main_topic(record: Record, letter: Letter, *, by: str, at: float,
                           entry: Entry) -> Record:
    """The record as the worker should see it again: attempt 0, no dead_letter, a note."""
    note = {"by": by, "at": round(at, 3), "reason": letter.reason,
            "attempts": len(letter.attempts),
            "dlq": {"topic": entry.message.topic, "partition": entry.message.partition,
                    "offset": entry.message.offset}}
    return replace(record, attempt=0, dead_letter=None,
                   extra={**record.extra, "redriven_from_dlq": note})


@dataclass(frozen=True, slots=True)
class Pick:
    """What ``dlq replay`` keeps of a letter while it streams the DLQ: no body."""

    id: str
    reason: str
    at: float
    partition: int
    offset: int
    selected: bool
    """It matches the filters."""
    has_record: bool
    describe: str


def _pick(letter: Letter, m: Message, filters: Sequence[tuple[str, str]]) -> Pick:
    record = letter.record
    return Pick(id=letter.id, reason=letter.reason,
                at=letter.at or m.timestamp_ms / 1000, partition=m.partition,
                offset=m.offset, selected=matches(letter, filters),
                has_record=record is not None,
                describe=_describe(letter) if record is not None else letter.id)


def _find_pick(picks: Sequence[Pick], wanted: str) -> Pick:
    exact = [p for p in picks if p.id == wanted]
    found = exact or [p for p in picks if p.id.startswith(wanted)]
    if not found:
        raise CliError(f"no dead letter with id {wanted!r}")
    if len(found) > 1:
        raise CliError(f"{wanted!r} matches {len(found)} dead letters; give more of the id")
    return found[0]


async def cmd_replay(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    """Streams the DLQ twice, never holding a letter's body for longer than its replay:
    the first pass keeps per id only its newest letter's position and facts (:class:`Pick`)
    and decides; the second reads the chosen letters again, by position, and replays each
    as it arrives (in DLQ order), stopping once all were found."""
    kafka = settings.kafka
    latest: dict[str, Pick] = {}
    async for m in read_each(kafka, kafka.dlq_topic, settings.timeout_seconds):
        letter = read_letter(m.value, m.key)
        latest.pop(letter.id, None)  # a record's letters share a key, so a partition
        latest[letter.id] = _pick(letter, m, args.filters)
    picks = sorted(latest.values(), key=lambda p: p.at)
    if args.ids:
        chosen = [_find_pick(picks, wanted) for wanted in args.ids]
        if not_again := [p.id for p in chosen if p.reason == REPLAYED]:
            raise CliError(f"already replayed (use `dlq show`): {', '.join(not_again)}")
    else:
        chosen = [p for p in picks if p.reason != REPLAYED]
    chosen = [p for p in chosen if p.selected]
    skipped = [p for p in chosen if not p.has_record or p.reason in REJECTED]
    chosen = [p for p in chosen if p.has_record and p.reason not in REJECTED]
    for p in skipped:
        why = (f"a {MALFORMED} letter is not a record" if not p.has_record
               else f"a record refused as {p.reason} is not trusted and")
        print(f"skipping {p.id}: {why} cannot be replayed", file=sys.stderr)
    if args.ids and skipped:
        return 1
    by = args.by or _who()
    verb = "would replay" if args.dry_run else "replayed"
    if args.dry_run or not chosen:
        for p in chosen:
            out.write(f"{verb} {p.describe}\n")
        out.write(f"{verb} {len(chosen)} record(s) to {kafka.topic}\n")
        return 0
    wanted = {(p.partition, p.offset) for p in chosen}
    done = 0

    async def again() -> AsyncIterator[Entry]:
        nonlocal done
        async with contextlib.aclosing(
                read_each(kafka, kafka.dlq_topic, settings.timeout_seconds)) as letters:
            async for m in letters:
                if (m.partition, m.offset) in wanted:
                    entry = Entry(read_letter(m.value, m.key), m)
                    if replayable(entry):  # as decided (the letter is the same bytes)
                        yield entry
                    done += 1
                    if done == len(wanted):
                        return

    await replay_entries(kafka, again(), by=by, rate=args.rate, signing=settings.signing,
                         timeout=settings.timeout_seconds,
                         on_each=lambda e: out.write(f"{verb} {_describe(e.letter)}\n"))
    if done < len(wanted):
        raise CliError(f"{len(wanted) - done} chosen dead letter(s) were gone from "
                       f"{kafka.dlq_topic} on the second read (retention?)")
    out.write(f"{verb} {len(chosen)} record(s) to {kafka.topic}\n")
    return 0


async def _each(entries: Iterable[Entry] | AsyncIterable[Entry]) -> AsyncIterator[Entry]:
    if isinstance(entries, AsyncIterable):
        async for e in entries:
            yield e
    else:
        for e in entries:
            yield e


async def replay_entries(kafka: KafkaSettings,
                         chosen: Iterable[Entry] | AsyncIterable[Entry], *, by: str,
                         rate: float, signing: SigningKeys | None, timeout: float,
                         on_each: Callable[[Entry], object] = lambda _e: None) -> None:
    """Put ``chosen`` (replayable entries, a sequence or a stream) back on the capture
    topic, attempts reset, signed with the first signing key when one is set, each
    followed by a replay marker on the DLQ; at most ``rate`` records a second (0: no
    limit). Shared by ``dlq replay`` and the console. Raises :class:`CliError` when Kafka
    is unreachable or refuses a record."""
    interval = 1.0 / rate if rate > 0 else 0.0
    async with publisher(kafka, timeout) as pub:
        next_at = time.monotonic()
        async for e in _each(chosen):
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at, time.monotonic()) + interval
            assert e.letter.record is not None
            at = time.time()
            record = back_on_the_main_topic(e.letter.record, e.letter, by=by, at=at, entry=e)
            value = encode(record)
            await publish(pub, kafka.topic, record.id.encode(), value,
                          with_signature(list(KAFKA_HEADERS), value, signing), timeout)
            marker = replay_marker(record.id, by=by, at=at)
            await publish(pub, kafka.dlq_topic, record.id.encode(), marker,
                          with_signature(list(KAFKA_HEADERS), marker, signing), timeout)
            on_each(e)


def _describe(letter: Letter) -> str:
    record = letter.record
    assert record is not None
    return f"{letter.id} {record.method} {record.path or record.uri} ({letter.reason})"


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{os.environ.get('POD_NAME') or socket.gethostname()}"


async def cmd_status(args: argparse.Namespace, settings: CliSettings,
                     out: IO[str]) -> int:
    return await cli_status.run(args.id, settings.kafka, settings.status_url,
                                settings.status_topic, settings.timeout_seconds, out)


# -- quarantine --------------------------------------------------------------------------


def _quarantined(directory: Path) -> Iterator[Quarantined]:
    """Every entry, streamed in file order; unreadable lines are reported on stderr."""
    for entry in quarantine.read(directory):
        if isinstance(entry, ValueError):
            print(f"redrive: skipping a line of {quarantine.path_in(directory)}: {entry}",
                  file=sys.stderr)
            continue
        yield entry


async def cmd_q_list(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    now = time.time()
    rows: list[list[str]] = []
    for entry in _quarantined(args.dir):
        if args.json:
            out.write(json.dumps({"id": entry.id, "at": entry.at, "reason": entry.reason,
                                  "topic": entry.topic, "bytes": len(entry.value),
                                  "detail": entry.detail}) + "\n")
        else:
            rows.append([entry.id, age(now - entry.at), entry.reason, entry.topic,
                         str(len(entry.value))])
    if not args.json:
        if rows:
            table([["ID", "AGE", "REASON", "TOPIC", "BYTES"], *rows], out)
        else:
            out.write(f"no quarantined records in {args.dir}\n")
    return 0


def _find_quarantined(directory: Path, wanted: str) -> Quarantined:
    found: dict[str, Quarantined] = {}
    for entry in _quarantined(directory):
        if entry.id.startswith(wanted):
            found[entry.id] = entry
    if not found:
        raise CliError(f"no quarantined record with id {wanted!r} in {directory}")
    if len(found) > 1 and wanted not in found:
        raise CliError(f"{wanted!r} matches {len(found)} records; give more of the id")
    return found.get(wanted) or next(iter(found.values()))


async def cmd_q_show(args: argparse.Namespace, settings: CliSettings, out: IO[str]) -> int:
    entry = _find_quarantined(args.dir, args.id)
    try:
        value: Any = entry.value.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(entry.value).decode(), "base64"
    out.write(json.dumps({
        "id": entry.id, "at": entry.at, "reason": entry.reason, "detail": entry.detail,
        "topic": entry.topic, "bytes": len(entry.value),
        "headers": {name: v.decode("utf-8", "replace") for name, v in entry.headers},
        "value_encoding": encoding, "value": value}, indent=2) + "\n")
    return 0


async def cmd_q_replay(args: argparse.Namespace, settings: CliSettings,
                       out: IO[str]) -> int:
    wanted = set(args.ids or ())
    chosen = [e for e in _quarantined(args.dir) if args.all or e.id in wanted
              or any(e.id.startswith(w) for w in wanted)]
    if not chosen:
        raise CliError(f"nothing to replay in {args.dir}")
    if args.dry_run:
        for entry in chosen:
            out.write(f"would replay {entry.id} to {entry.topic} ({entry.reason})\n")
        return 0
    done: list[str] = []
    try:
        async with publisher(settings.kafka, settings.timeout_seconds) as pub:
            for entry in chosen:
                await publish(pub, entry.topic, entry.key, entry.value, entry.headers,
                              settings.timeout_seconds)
                done.append(entry.id)
                out.write(f"replayed {entry.id} to {entry.topic}\n")
    finally:
        # What was published leaves the file even if a later one failed.
        await asyncio.to_thread(quarantine.remove, args.dir, done)
    return 0


COMMANDS = {"tail": cmd_tail, "list": cmd_list, "show": cmd_show, "replay": cmd_replay,
            "status": cmd_status}
QUARANTINE_COMMANDS = {"list": cmd_q_list, "show": cmd_q_show, "replay": cmd_q_replay}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: IO[str] | None = None) -> int:
    """Entry point of the ``redrive`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The CLI reports failures itself, once; keep library retry chatter off the terminal.
    for name in ("", "aiokafka"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    logging.getLogger("aiokafka").propagate = False
    out = out or sys.stdout
    try:
        settings = settings_from(args, os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"redrive: {exc.render()}", file=sys.stderr)
        return 2
    if args.command == "quarantine":
        command = QUARANTINE_COMMANDS[args.quarantine_command]
    else:
        command = COMMANDS[args.dlq_command if args.command == "dlq" else args.command]
    try:
        return asyncio.run(command(args, settings, out))
    except CliError as exc:
        print(f"redrive: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
