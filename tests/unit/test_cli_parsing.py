"""The redrive CLI's flags, environment fallbacks, filters and formatting (no Kafka)."""

from __future__ import annotations

import io

import pytest

from redrive.cli import age, build_parser, main, matches, settings_from, table
from redrive.deadletter import AttemptLog, dead_letter, read_letter
from redrive.envelope import encode
from tests.support.worker import make_record


def test_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "tail" in out and "dlq" in out and "REDRIVE_KAFKA_BOOTSTRAP_SERVERS" in out


def test_flags_win_over_environment_variables_of_the_same_name() -> None:
    args = build_parser().parse_args(["dlq", "list", "--topic", "from-flag"])
    s = settings_from(args, {"REDRIVE_TOPIC": "from-env", "REDRIVE_DLQ_TOPIC": "dead",
                             "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": "k:1"})
    assert (s.kafka.topic, s.kafka.dlq_topic, s.kafka.bootstrap_servers) == (
        "from-flag", "dead", ("k:1",))


def test_connection_flags_work_before_and_after_the_command() -> None:
    before = build_parser().parse_args(["--kafka-bootstrap-servers", "a:1", "dlq", "list"])
    after = build_parser().parse_args(["dlq", "list", "--kafka-bootstrap-servers", "a:1"])
    assert before.kafka_bootstrap_servers == after.kafka_bootstrap_servers == "a:1"


def test_invalid_settings_exit_2_listing_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dlq", "list"], environ={"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": "nope",
                                          "REDRIVE_KAFKA_TIMEOUT_SECONDS": "-1"})
    assert code == 2
    err = capsys.readouterr().err
    assert "REDRIVE_KAFKA_BOOTSTRAP_SERVERS" in err and "REDRIVE_KAFKA_TIMEOUT_SECONDS" in err


@pytest.mark.parametrize("argv", [
    ["dlq", "replay"], ["dlq", "replay", "--id", "x", "--all"],
    ["dlq", "replay", "--all", "--rate", "-1"], ["dlq", "list", "--filter", "nokey"],
    ["tail", "--max-records", "0"], ["dlq", "show"], ["frobnicate"],
])
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def _letter(**record_fields: object) -> object:
    record = make_record(**record_fields)
    return read_letter(encode(dead_letter(
        record, "max_attempts", [AttemptLog(at=1, duration_seconds=0.1, status=503)], at=2)))


def test_filters_match_on_reason_method_path_status_and_kind() -> None:
    letter = _letter(method="PUT", uri="/api/users/7", path="/api/users/7")
    assert matches(letter, [("reason", "max_attempts"), ("method", "put")])
    assert matches(letter, [("path", "/api/*"), ("status", "503"), ("kind", "connect_*")])
    assert not matches(letter, [("path", "/other/*")])
    assert not matches(letter, [("reason", "permanent")])


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (75, "1m15s"), (3 * 3600 + 61, "3h01m"), (2 * 86400 + 3600, "2d01h"), (-3, "0s")])
def test_ages_read_at_a_glance(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_tables_align_their_columns() -> None:
    out = io.StringIO()
    table([["ID", "AGE"], ["abc", "5s"], ["a", "10m00s"]], out)
    assert out.getvalue().splitlines() == ["ID   AGE", "abc  5s", "a    10m00s"]
