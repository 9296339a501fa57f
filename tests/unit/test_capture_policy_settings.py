"""REDRIVE_CAPTURE_METHODS and REDRIVE_CAPTURE_EXCLUDE_PATHS: parsing and matching."""

from __future__ import annotations

import pytest

from redrive.errors import ConfigError
from sidecar.proxy import PathMatcher
from sidecar.settings import Settings


def test_defaults_capture_the_non_safe_methods_and_exclude_no_path() -> None:
    capture = Settings.from_env({}).capture
    assert capture.methods == {"POST", "PUT", "PATCH", "DELETE"}
    assert capture.exclude_paths == ()


def test_methods_are_case_insensitive_and_paths_keep_their_order() -> None:
    capture = Settings.from_env({"REDRIVE_CAPTURE_METHODS": "post, get",
                                 "REDRIVE_CAPTURE_EXCLUDE_PATHS": "/livez, /ready/*"}).capture
    assert capture.methods == {"POST", "GET"}
    assert capture.exclude_paths == ("/livez", "/ready/*")


@pytest.mark.parametrize(("name", "value"), [
    ("REDRIVE_CAPTURE_METHODS", "POST,GE T"),
    ("REDRIVE_CAPTURE_METHODS", "POST,/x"),
    ("REDRIVE_CAPTURE_EXCLUDE_PATHS", "healthz"),
    ("REDRIVE_CAPTURE_EXCLUDE_PATHS", "/a/*/b"),
    ("REDRIVE_CAPTURE_EXCLUDE_PATHS", "/a?x=1"),
])
def test_invalid_values_are_named_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("path", "excluded"), [
    ("/healthz", True), ("/healthz/", False), ("/healthzz", False),
    ("/internal/", True), ("/internal/a/b", True), ("/internal", False), ("/", False),
])
def test_exact_paths_and_trailing_star_prefixes(path: str, excluded: bool) -> None:
    assert PathMatcher(("/healthz", "/internal/*")).matches(path) is excluded


def test_a_lone_star_excludes_everything_and_no_pattern_nothing() -> None:
    assert PathMatcher(("*",)).matches("/any")
    assert not PathMatcher(())
