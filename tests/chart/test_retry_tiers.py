"""The chart's retry tier topics are the worker's: the same names from the same values.

The worker parks a record waiting for its next attempt on ``<retry topic>.<delay>``
(``redrive.retrytopics``), one tier per distinct delay of its backoff schedule
(``RetryPolicy.tiers``). The chart computes that list in a template
(``redrive.kafka.retryTierTopics``) to make a KafkaTopic and an ACL for each tier. Here the
worker's own code runs on the environment the chart gives the worker, so the two cannot
drift apart: a schedule the template gets wrong, or a change to the naming in Python
that the template does not follow, fails these tests.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from redrive.retrytopics import tier_topic
from retry_worker.policy import RetryPolicy
from retry_worker.settings import Settings
from tests.chart.chartlib import (
    CHART,
    REPO,
    Case,
    HelmError,
    env_map,
    helm,
    validate_any,
)

STRIMZI_USERS = ("kafka.strimzi.enabled=true", "kafka.strimzi.users.enabled=true")
BASE_SUFFIXES = ("", ".retry", ".dlq", ".status")


def rendered(*sets: str, set_json: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = Case("tiers", sets=(*STRIMZI_USERS, *sets)).args()
    for item in set_json:
        args += ["--set-json", item]
    docs = [d for d in yaml.safe_load_all(helm(*args)) if d]
    for doc in docs:
        validate_any(doc)
    return docs


def worker_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [worker] = [d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"].endswith("-retry-worker")]
    [container] = [c for c in worker["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "retry-worker"]
    # Kafka credentials are files from Secrets, absent here; they play no part in the tiers.
    return {name: e["value"] for name, e in env_map(container).items() if "value" in e
            and not (name.startswith("REDRIVE_KAFKA_") and "BOOTSTRAP" not in name)}


def workers_tiers(env: dict[str, str]) -> list[str]:
    """What the worker itself subscribes to and writes (retry_worker/running.py)."""
    settings = Settings.from_env(env)
    return [tier_topic(settings.consumer.retry_topic, tier)
            for tier in RetryPolicy.from_settings(settings.retry).tiers()]


def charts_tiers(docs: list[dict[str, Any]], env: dict[str, str]) -> list[str]:
    base = {env["REDRIVE_TOPIC"] + s for s in BASE_SUFFIXES}
    names = [d["spec"]["topicName"] for d in docs if d["kind"] == "KafkaTopic"]
    assert base <= set(names)
    return [n for n in names if n not in base]


SCHEDULES = {
    # name: (initialSeconds, multiplier, maxSeconds, maxAttempts)
    "default": None,
    "sub-second, fractional multiplier": (0.1, 1.5, 2.5, 12),
    "doubling to ten minutes": (1, 2, 600, 10),
    "quarter second, tripling": (0.25, 3, 100, 8),
    "constant delay": (5, 1, 5, 3),
    "one attempt: only the cap": (2, 4, 3600, 1),
    "half milliseconds round to even": (0.0025, 2, 1, 6),
    "cap reached early, many attempts": (2, 4, 3600, 40),
    "cap not a tier of the schedule": (3, 10, 1000, 4),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_the_charts_tier_topics_are_the_workers(schedule: str) -> None:
    values = SCHEDULES[schedule]
    sets: tuple[str, ...] = ()
    set_json: tuple[str, ...] = ()
    if values is not None:
        initial, multiplier, cap, attempts = values
        set_json = (f'retryWorker.backoff={{"initialSeconds":{initial},'
                    f'"multiplier":{multiplier},"maxSeconds":{cap}}}',)
        sets = (f"retryWorker.maxAttempts={attempts}",)
    docs = rendered(*sets, set_json=set_json)
    env = worker_env(docs)
    expected = workers_tiers(env)
    assert expected, "the worker always has at least the cap's tier"
    assert charts_tiers(docs, env) == expected  # same names, same order, no duplicates
    if values is None:
        retry = env["REDRIVE_RETRY_TOPIC"]
        assert expected == [f"{retry}.{d}" for d in
                            ("2s", "8s", "32s", "128s", "512s", "2048s", "3600s")]
    # Each tier is a kept topic like the others, with the worker's ACLs on it.
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    retry_topic = topics[env["REDRIVE_RETRY_TOPIC"]]
    [user] = [d for d in docs if d["kind"] == "KafkaUser"
              and d["metadata"]["name"].endswith("-retry-worker")]
    acls = {(a["resource"]["name"], op) for a in user["spec"]["authorization"]["acls"]
            for op in a["operations"]}
    for name in expected:
        topic = topics[name]
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert topic["spec"]["config"] == retry_topic["spec"]["config"]
        assert topic["spec"]["partitions"] == retry_topic["spec"]["partitions"]
        assert {(name, op) for op in ("Read", "Write", "Describe")} <= acls
    # KafkaTopic object names stay distinct even when the fullname is cut to fit.
    objects = [d["metadata"]["name"] for d in docs if d["kind"] == "KafkaTopic"]
    assert len(set(objects)) == len(objects)


def test_tier_object_names_stay_distinct_with_a_long_release_name() -> None:
    out = helm("template", "x", str(CHART), "--set", "kafka.strimzi.enabled=true",
               "--set", "fullnameOverride=" + "a" * 63)
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "KafkaTopic"]
    names = [d["metadata"]["name"] for d in docs]
    assert len(names) == 11 and len(set(names)) == 11
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)


def test_a_schedule_with_too_many_tiers_is_refused_by_both() -> None:
    sets = ("retryWorker.maxAttempts=40",)
    set_json = ('retryWorker.backoff={"initialSeconds":1,"multiplier":1.1,"maxSeconds":3600}',)
    with pytest.raises(HelmError, match="more than 24"):
        rendered(*sets, set_json=set_json)
    # Without Strimzi too: the worker's Deployment computes the tiers for the check.
    args = ["template", "x", str(CHART), "--set", sets[0], "--set-json", set_json[0]]
    with pytest.raises(HelmError, match="more than 24"):
        helm(*args)
    env = worker_env(rendered("retryWorker.maxAttempts=8"))
    env |= {"REDRIVE_MAX_ATTEMPTS": "40", "REDRIVE_BACKOFF_INITIAL_SECONDS": "1",
            "REDRIVE_BACKOFF_MULTIPLIER": "1.1"}
    with pytest.raises(Exception, match="more than 24"):
        Settings.from_env(env)


def test_the_docs_list_the_default_topics_to_create_on_an_existing_kafka() -> None:
    docs = (REPO / "docs" / "kubernetes.md").read_text()
    env = worker_env(rendered())
    topic = env["REDRIVE_TOPIC"]
    for name in workers_tiers(env):
        assert name.replace(topic, "<topic>", 1) in docs, name


def test_a_retention_shorter_than_the_longest_wait_is_refused() -> None:
    """A record waits up to cap x (1 + jitter) <= 2 x cap on its tier: it must not expire."""
    rendered("kafka.strimzi.topicRetentionMs=7200000")  # exactly twice the 3600 s cap
    with pytest.raises(HelmError, match="topicRetentionMs"):
        rendered("kafka.strimzi.topicRetentionMs=7199999")
