"""The capture answers are written from templates: byte for byte what ``json.dumps``
writes for the same objects, for every outcome and answer mode."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from redrive.envelope import new_id
from redrive.headers import REDRIVE_ID_HEADER
from redrive.status import status_path
from sidecar.capture import Captured
from sidecar.metrics import SidecarMetrics
from sidecar.proxy import Proxy
from sidecar.settings import Settings


def proxy(mode: str) -> tuple[Proxy, SidecarMetrics]:
    settings = Settings.from_env({"REDRIVE_FAILURE_RESPONSE": mode})
    assert settings.capture.failure_response == mode
    metrics = SidecarMetrics(CollectorRegistry())
    return Proxy(settings, None, None, metrics), metrics  # type: ignore[arg-type]


@pytest.mark.parametrize("result", ["published", "spooled", "lost"])
def test_the_503_answer_is_what_json_dumps_writes(result: str) -> None:
    p, _ = proxy("reject")
    rid = new_id()
    answer = p._answer(Captured(rid, result), "7")
    queued = result != "lost"
    message = ("The service is temporarily unavailable. Your request was saved and will be "
               "retried automatically." if queued else
               "The service is temporarily unavailable and your request could not be "
               "saved. Please retry later.")
    assert answer.status == 503
    assert answer.body == json.dumps({"error": "service_unavailable", "message": message,
                                      "id": rid, "queued": queued,
                                      "status_url": status_path(rid)}).encode()
    assert dict(answer.headers) == {"Content-Type": "application/json", "Retry-After": "7",
                                    REDRIVE_ID_HEADER: rid}


def test_the_202_answer_is_what_json_dumps_writes() -> None:
    p, _ = proxy("accept")
    rid = new_id()
    answer = p._answer(Captured(rid, "published"), "3")
    assert answer.status == 202
    assert answer.body == json.dumps({"status": "queued", "id": rid,
                                      "status_url": status_path(rid)}).encode()
    assert dict(answer.headers) == {"Content-Type": "application/json", "Retry-After": "3",
                                    REDRIVE_ID_HEADER: rid, "Location": status_path(rid)}


def test_an_unusual_id_is_still_valid_json() -> None:
    p, _ = proxy("reject")
    rid = 'odd"\\id\u00e9'
    body = json.loads(p._answer(Captured(rid, "lost"), "1").body)
    assert body["id"] == rid and body["queued"] is False
