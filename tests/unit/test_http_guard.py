"""The sidecar's request guards and target handling, as pure functions."""

from __future__ import annotations

import pytest
from aiohttp.http import HttpVersion
from aiohttp.http_exceptions import BadHttpMessage, InvalidHeader, LineTooLong
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.proxy import _origin_form
from sidecar.server import Refused, _classify, check_message


def message(method: str = "GET", path: str = "/", version: tuple[int, int] = (1, 1),
            headers: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    req = make_mocked_request(method, path, headers=CIMultiDict(headers or [("Host", "a")]),
                              version=HttpVersion(*version))
    return req._message


@pytest.mark.parametrize(("kwargs", "status"), [
    ({}, None),
    ({"version": (1, 0)}, None),
    ({"path": "http://h/x"}, None),
    ({"path": "HTTPS://h:8443"}, None),
    ({"headers": [("Host", "a"), ("Transfer-Encoding", "chunked")]}, None),
    ({"headers": [("Host", "a"), ("Transfer-Encoding", " Chunked ")]}, None),
    ({"version": (0, 9)}, 505),
    ({"version": (2, 0)}, 505),
    ({"method": "CONNECT", "path": "h:443"}, 405),
    ({"method": "OPTIONS", "path": "*"}, 400),
    ({"path": "ftp://h/x"}, 400),
    ({"path": "http://user@h/x"}, 400),
    ({"path": "http:///x"}, 400),
    ({"headers": [("Host", "a"), ("Transfer-Encoding", "gzip, chunked")]}, 501),
    ({"headers": [("Host", "a"), ("Transfer-Encoding", "gzip"),
                  ("Transfer-Encoding", "chunked")]}, 501),
    ({"version": (1, 0), "headers": [("Host", "a"), ("Transfer-Encoding", "chunked")]}, 400),
])
def test_check_message(kwargs: dict[str, object], status: int | None) -> None:
    refused = check_message(message(**kwargs))  # type: ignore[arg-type]
    assert (refused.status if refused else None) == status


def test_errors_never_carry_the_clients_bytes() -> None:
    secret = b"tok\x00en-secret"
    for exc in (InvalidHeader(secret), LineTooLong(secret.decode("latin-1"), 10),
                BadHttpMessage(f"Invalid header value char:\n\n  {secret!r}\n   ^")):
        _, error, text = _classify(400, exc)
        assert "secret" not in text and "secret" not in error
    assert _classify(400, LineTooLong("x", 1))[0] == 431
    assert _classify(400, BadHttpMessage("Too many headers received"))[0] == 431
    assert _classify(400, BadHttpMessage("Duplicate Content-Length:\n\n  b'x'\n ^"))[2] \
        == "malformed HTTP request: Duplicate Content-Length"
    assert _classify(400, Refused(501, "x", "y")) == (501, "x", "y")
    assert _classify(500, RuntimeError("boom"))[0] == 500


@pytest.mark.parametrize(("target", "path", "authority"), [
    ("http://h/x?y=1", "/x?y=1", "h"),
    ("http://h:8080", "/", "h:8080"),
    ("https://h?q=1", "/?q=1", "h"),
    ("http://h/a%2Fb#frag", "/a%2Fb", "h"),
    ("http://h#frag", "/", "h"),
])
def test_origin_form(target: str, path: str, authority: str) -> None:
    assert _origin_form(target) == (path, authority)


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#@ "),
               min_size=1, max_size=20),
       st.text(alphabet=st.characters(codec="ascii", exclude_characters="# "), max_size=40))
def test_origin_form_always_yields_a_path_and_keeps_the_authority(host: str,
                                                                  rest: str) -> None:
    path, authority = _origin_form(f"http://{host}/{rest}")
    assert authority == host
    assert path == "/" + rest
