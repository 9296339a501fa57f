"""Kafka TLS, SASL and least-privilege users, as the chart renders them.

Two ways in: ``kafka.security`` for an existing Kafka (credentials from Secrets you made),
and ``kafka.strimzi.tls`` / ``kafka.strimzi.users`` for the Kafka the chart makes (a
KafkaUser per service, credentials from the Secrets Strimzi makes). Either way each
service gets only references to Secrets, mounted read-only as files, and the services'
own settings parser accepts what is rendered.
"""
# ruff: noqa: S105  (the test passwords below are throwaway literals)

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from redrive.settings import Env, KafkaSettings
from tests.chart.chartlib import (
    CASES,
    CHART,
    CI_DIR,
    KAFKA_SECURITY_ENV,
    NAMESPACE,
    RELEASE,
    SIDECAR_NAME,
    Case,
    HelmError,
    all_containers,
    env_map,
    env_value,
    helm,
    render,
    validate_any,
)
from tests.chart.test_subchart import PARENT_CHART, PARENT_DEPLOYMENT
from tests.support.pki import self_signed

FULLNAME = f"{RELEASE}-redrive"
CLUSTER = FULLNAME
BACKEND = f"{FULLNAME}-backend"
WORKER = f"{FULLNAME}-retry-worker"
USERS = {"sidecar": f"{FULLNAME}-sidecar", "worker": WORKER, "operator": f"{FULLNAME}-operator"}
MOUNT = "/etc/redrive/kafka"
# Per-service names (isolation): derived from the release and its namespace by default.
TOPIC = f"redrive.{NAMESPACE}.{RELEASE}"
RETRY, DLQ, STATUS, GROUP = f"{TOPIC}.retry", f"{TOPIC}.dlq", f"{TOPIC}.status", TOPIC
# The retry tiers of the default backoff (2 s x 4, capped at 3600 s, 8 attempts).
TIERS = tuple(f"{RETRY}.{d}" for d in ("2s", "8s", "32s", "128s", "512s", "2048s", "3600s"))
SECURED_CASES = ("kafka-auth", "kafka-tls", "kafka-external-sasl")

EXTERNAL_MTLS = (
    "kafka.security.protocol=SSL",
    "kafka.security.caSecret.name=kafka-ca",
    "kafka.security.checkHostname=false",
    "kafka.security.sidecar.clientCertSecret.name=sidecar-tls",
    "kafka.security.retryWorker.clientCertSecret.name=worker-tls",
)
STRIMZI_SCRAM_TLS = (CI_DIR / "kafka-auth-values.yaml",), ("kafka.strimzi.tls=true",)


@functools.cache
def render_extra(values: tuple[Path, ...], sets: tuple[str, ...]) -> list[dict[str, Any]]:
    """A rendering that is not one of the ci/ files: --values and --set on the chart."""
    out = helm(*Case("extra", values=values, sets=sets).args())
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        validate_any(doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def services(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """role -> (container, pod spec) of the sidecar (in the demo backend) and the worker."""
    out = {}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in all_containers(pod):
            if c["name"] == SIDECAR_NAME:
                out["sidecar"] = (c, pod)
            elif c["name"] == "retry-worker":
                out["worker"] = (c, pod)
    return out


def security_env(c: dict[str, Any]) -> dict[str, str]:
    return {name: env_value(c, name) for name in env_map(c) if name in KAFKA_SECURITY_ENV}


def credentials_volume(c: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The projected volume mounted at /etc/redrive/kafka, checked to be read-only."""
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == MOUNT]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["projected"]["defaultMode"] == 0o440
    return volume["projected"]


def files(projected: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """file name in the mount -> (source kind, object name, key)."""
    out = {}
    for source in projected["sources"]:
        [(kind, ref)] = source.items()
        for item in ref["items"]:
            assert item["path"] not in out, item["path"]
            out[item["path"]] = (kind, ref["name"], item["key"])
    return out


def acls(user: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) allowed to a KafkaUser, literal names only."""
    out = set()
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        assert resource.get("patternType") == "literal", rule
        assert rule.get("type", "allow") == "allow", rule
        assert rule.get("host", "*") == "*", rule
        for op in rule["operations"]:
            out.add((resource["type"], resource["name"], op))
    return out


# --- the default renders nothing new -----------------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if c not in SECURED_CASES])
def test_without_security_nothing_is_rendered(case: str) -> None:
    rendered = render(case)
    assert not rendered.of_kind("KafkaUser")
    for c, pod in services(rendered.docs).values():
        assert not KAFKA_SECURITY_ENV & set(env_map(c)), c["name"]
        assert MOUNT not in {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert not [v for v in pod["volumes"] if "projected" in v]
    for kafka in rendered.of_kind("Kafka"):
        assert "authorization" not in kafka["spec"]["kafka"]
        assert "userOperator" not in kafka["spec"]["entityOperator"]
        for listener in kafka["spec"]["kafka"]["listeners"]:
            assert "authentication" not in listener


# --- secrets stay secret -----------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_no_password_or_key_is_ever_a_literal_value(case: str) -> None:
    rendered = render(case)
    for c, _ in services(rendered.docs).values():
        env = env_map(c)
        assert "REDRIVE_KAFKA_SASL_PASSWORD" not in env, "the password is a mounted file"
        for name, entry in env.items():
            if name in KAFKA_SECURITY_ENV:
                assert "value" in entry, name  # paths and names only, no secretKeyRef
            if name.endswith("_FILE") and name.startswith("REDRIVE_KAFKA_"):
                assert entry["value"].startswith(MOUNT + "/"), name
    # The chart never makes a Secret or ConfigMap of Kafka credentials: they are referenced.
    for doc in rendered.of_kind("Secret") + rendered.of_kind("ConfigMap"):
        text = yaml.safe_dump(doc).lower()
        assert "sasl" not in text and "user.key" not in text, doc["metadata"]["name"]


# --- Strimzi: users, listener, ACLs ------------------------------------------------------

def test_the_strimzi_listener_requires_scram_and_the_cluster_authorizes() -> None:
    rendered = render("kafka-auth")
    [kafka] = rendered.of_kind("Kafka")
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"]) == (9092, False)
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    assert kafka["spec"]["entityOperator"]["userOperator"] == {}


def test_the_tls_listener_uses_mutual_tls_on_9093() -> None:
    rendered = render("kafka-tls")
    [kafka] = rendered.of_kind("Kafka")
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"]) == (9093, True)
    assert listener["authentication"] == {"type": "tls"}
    for c, _ in services(rendered.docs).values():
        assert env_value(c, "REDRIVE_KAFKA_BOOTSTRAP_SERVERS") == \
            f"{CLUSTER}-kafka-bootstrap.{NAMESPACE}.svc:9093"
    for policy in rendered.of_kind("NetworkPolicy"):
        ports = {p["port"] for rule in policy["spec"].get("egress", [])
                 for p in rule.get("ports", [])}
        assert 9093 in ports, policy["metadata"]["name"]


@pytest.mark.parametrize("case", ["kafka-auth", "kafka-tls"])
def test_each_kafka_user_belongs_to_the_cluster_and_is_valid(case: str) -> None:
    rendered = render(case)
    users = rendered.of_kind("KafkaUser")
    expected = {USERS["sidecar"], USERS["worker"]}
    if rendered.values["kafka"]["strimzi"]["users"]["operator"]:
        expected.add(USERS["operator"])
    assert {u["metadata"]["name"] for u in users} == expected
    for user in users:
        assert user["apiVersion"] == "kafka.strimzi.io/v1"
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
        assert user["spec"]["authentication"]["type"] == \
            rendered.values["kafka"]["strimzi"]["users"]["authentication"]
        assert user["spec"]["authorization"]["type"] == "simple"
        # Strimzi generates the password (or certificate): none comes from the chart.
        assert "password" not in user["spec"]["authentication"]
        validate_any(user)


@pytest.mark.parametrize("case", ["kafka-auth", "kafka-tls"])
def test_acls_are_exactly_least_privilege(case: str) -> None:
    rendered = render(case)
    [worker] = [c for role, (c, _) in services(rendered.docs).items() if role == "worker"]
    # The ACLs name what the worker really uses.
    assert (env_value(worker, "REDRIVE_TOPIC"), env_value(worker, "REDRIVE_RETRY_TOPIC"),
            env_value(worker, "REDRIVE_DLQ_TOPIC"), env_value(worker, "REDRIVE_GROUP_ID")) == \
        (TOPIC, RETRY, DLQ, GROUP)
    sidecar = acls(rendered.get("KafkaUser", USERS["sidecar"]))
    # Captures, and their `queued` states on the status topic.
    assert sidecar == {("topic", TOPIC, "Write"), ("topic", TOPIC, "Describe"),
                       ("topic", STATUS, "Write"), ("topic", STATUS, "Describe")}
    worker_acls = acls(rendered.get("KafkaUser", USERS["worker"]))
    assert worker_acls == {
        ("topic", TOPIC, "Read"), ("topic", TOPIC, "Describe"),
        *{("topic", t, op) for t in (RETRY, *TIERS) for op in ("Read", "Write", "Describe")},
        ("topic", DLQ, "Write"), ("topic", DLQ, "Describe"),
        ("topic", STATUS, "Read"), ("topic", STATUS, "Write"), ("topic", STATUS, "Describe"),
        ("group", GROUP, "Read"),
    }
    # Least privilege, said the other way round.
    assert not {a for a in sidecar if a[2] == "Read"}, "the sidecar can read nothing"
    assert ("topic", TOPIC, "Write") not in worker_acls, "the worker cannot capture"
    assert ("topic", DLQ, "Read") not in worker_acls
    for user in rendered.of_kind("KafkaUser"):
        for kind, name, op in acls(user):
            assert op not in ("All", "Alter", "Delete", "Create", "AlterConfigs")
            assert kind in ("topic", "group") and name != "*"


def test_the_operator_user_may_run_the_cli_and_nothing_else() -> None:
    operator = acls(render("kafka-auth").get("KafkaUser", USERS["operator"]))
    # tail reads the capture topic; dlq list/show read the DLQ; dlq replay writes records
    # back to the capture topic and marks them on the DLQ; status reads the status topic.
    # No group: the CLI assigns.
    assert operator == {("topic", t, op) for t in (TOPIC, DLQ)
                        for op in ("Read", "Write", "Describe")} | \
        {("topic", STATUS, "Read"), ("topic", STATUS, "Describe")}
    assert not render("kafka-tls").find("KafkaUser", USERS["operator"])


def test_without_a_worker_there_is_no_worker_user() -> None:
    docs = render_extra((CI_DIR / "kafka-auth-values.yaml",), ("retryWorker.enabled=false",
                                                               "retryWorker.targetUrl=http://x"))
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "KafkaUser"}
    assert names == {USERS["sidecar"], USERS["operator"]}


# --- each service is wired to its own credentials ----------------------------------------

def expected_strimzi(role: str, *, tls: bool,
                     mtls: bool) -> tuple[dict[str, str], dict[str, tuple[str, str, str]]]:
    """(env, files) one service should get from the Strimzi cluster and its KafkaUser."""
    user = USERS[role]
    env: dict[str, str] = {}
    mounted: dict[str, tuple[str, str, str]] = {}
    if mtls:
        env["REDRIVE_KAFKA_SECURITY_PROTOCOL"] = "SSL"
        env["REDRIVE_KAFKA_SSL_CERT_FILE"] = f"{MOUNT}/client.crt"
        env["REDRIVE_KAFKA_SSL_KEY_FILE"] = f"{MOUNT}/client.key"
        mounted["client.crt"] = ("secret", user, "user.crt")
        mounted["client.key"] = ("secret", user, "user.key")
    else:
        env["REDRIVE_KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
        env["REDRIVE_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
        env["REDRIVE_KAFKA_SASL_USERNAME"] = user
        env["REDRIVE_KAFKA_SASL_PASSWORD_FILE"] = f"{MOUNT}/sasl-password"
        mounted["sasl-password"] = ("secret", user, "password")
    if tls:
        env["REDRIVE_KAFKA_SSL_CA_FILE"] = f"{MOUNT}/ca.crt"
        env["REDRIVE_KAFKA_SSL_CHECK_HOSTNAME"] = "true"
        mounted["ca.crt"] = ("secret", f"{CLUSTER}-cluster-ca-cert", "ca.crt")
    return env, mounted


def docs_of(which: str) -> list[dict[str, Any]]:
    """A ci/ case by name, or one of the extra renderings."""
    if which == "scram+tls":
        return render_extra(*STRIMZI_SCRAM_TLS)
    if which == "external-mtls":
        return render_extra((), EXTERNAL_MTLS)
    return render(which).docs


@pytest.mark.parametrize(("name", "tls", "mtls"), [
    ("kafka-auth", False, False),
    ("scram+tls", True, False),
    ("kafka-tls", True, True),
])
def test_strimzi_services_use_their_own_user(name: str, tls: bool, mtls: bool) -> None:
    found = services(docs_of(name))
    assert set(found) == {"sidecar", "worker"}
    for role, (c, pod) in found.items():
        env, mounted = expected_strimzi(role, tls=tls, mtls=mtls)
        assert security_env(c) == env, (name, role)
        assert files(credentials_volume(c, pod)) == mounted, (name, role)


def test_strimzi_tls_without_users_encrypts_but_does_not_authenticate() -> None:
    docs = render_extra((CI_DIR / "strimzi-values.yaml",), ("kafka.strimzi.tls=true",))
    [kafka] = [d for d in docs if d["kind"] == "Kafka"]
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"]) == (9093, True)
    assert "authentication" not in listener and "authorization" not in kafka["spec"]["kafka"]
    assert not [d for d in docs if d["kind"] == "KafkaUser"]
    for c, pod in services(docs).values():
        assert security_env(c) == {"REDRIVE_KAFKA_SECURITY_PROTOCOL": "SSL",
                                   "REDRIVE_KAFKA_SSL_CA_FILE": f"{MOUNT}/ca.crt",
                                   "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME": "true"}
        assert files(credentials_volume(c, pod)) == {
            "ca.crt": ("secret", f"{CLUSTER}-cluster-ca-cert", "ca.crt")}


def test_an_existing_kafka_over_sasl_ssl_with_secrets_per_service() -> None:
    rendered = render("kafka-external-sasl")
    sec = rendered.values["kafka"]["security"]
    for role, (c, pod) in services(rendered.docs).items():
        creds = sec["sidecar" if role == "sidecar" else "retryWorker"]
        assert security_env(c) == {
            "REDRIVE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "REDRIVE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "REDRIVE_KAFKA_SASL_USERNAME": creds["username"],
            "REDRIVE_KAFKA_SASL_PASSWORD_FILE": f"{MOUNT}/sasl-password",
            "REDRIVE_KAFKA_SSL_CA_FILE": f"{MOUNT}/ca.crt",
            "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME": "true",
        }
        assert files(credentials_volume(c, pod)) == {
            "sasl-password": ("secret", creds["passwordSecret"]["name"], "password"),
            "ca.crt": ("configMap", "kafka-ca-bundle", "ca.pem"),
        }
    assert not rendered.of_kind("KafkaUser") and not rendered.of_kind("Kafka")


def test_an_existing_kafka_over_mutual_tls() -> None:
    found = services(render_extra((), EXTERNAL_MTLS))
    for role, secret in (("sidecar", "sidecar-tls"), ("worker", "worker-tls")):
        c, pod = found[role]
        assert security_env(c) == {
            "REDRIVE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "REDRIVE_KAFKA_SSL_CA_FILE": f"{MOUNT}/ca.crt",
            "REDRIVE_KAFKA_SSL_CERT_FILE": f"{MOUNT}/client.crt",
            "REDRIVE_KAFKA_SSL_KEY_FILE": f"{MOUNT}/client.key",
            "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
        assert files(credentials_volume(c, pod)) == {
            "ca.crt": ("secret", "kafka-ca", "ca.crt"),
            "client.crt": ("secret", secret, "tls.crt"),
            "client.key": ("secret", secret, "tls.key"),
        }


def test_tls_with_the_system_cas_needs_no_volume() -> None:
    found = services(render_extra((), ("kafka.security.protocol=SSL",)))
    for c, pod in found.values():
        assert security_env(c) == {"REDRIVE_KAFKA_SECURITY_PROTOCOL": "SSL",
                                   "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME": "true"}
        assert not [v for v in pod["volumes"] if "projected" in v]


def test_a_users_own_deployment_gets_the_subcharts_sidecar_user(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    (shop / "templates").mkdir(parents=True)
    (shop / "Chart.yaml").write_text(PARENT_CHART)
    (shop / "values.yaml").write_text(yaml.safe_dump({"redrive": {
        "backend": {"enabled": False},
        "retryWorker": {"targetUrl": "http://shop.shop.svc:80"},
        "kafka": {"strimzi": {"enabled": True, "tls": True, "users": {"enabled": True}}},
    }}))
    (shop / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    shutil.copytree(CHART, shop / "charts" / "redrive")
    out = helm("template", "shop", str(shop), "--namespace", "shop", "--kube-version",
               "1.33.0", "--api-versions", "kafka.strimzi.io/v1")
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        validate_any(doc)
    pod = find(docs, "Deployment", "shop")["spec"]["template"]["spec"]
    [sidecar] = [c for c in all_containers(pod) if c["name"] == SIDECAR_NAME]
    env = security_env(sidecar)
    assert env["REDRIVE_KAFKA_SASL_USERNAME"] == "shop-redrive-sidecar"
    assert files(credentials_volume(sidecar, pod)) == {
        "sasl-password": ("secret", "shop-redrive-sidecar", "password"),
        "ca.crt": ("secret", "shop-redrive-cluster-ca-cert", "ca.crt"),
    }
    assert find(docs, "KafkaUser", "shop-redrive-sidecar")


# --- the services accept what the chart renders ------------------------------------------

@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway self-signed certificate and its key, standing in for every PEM file."""
    return self_signed(tmp_path_factory.mktemp("pem"), "redrive-chart-test")


def parse_as_the_service(c: dict[str, Any], mounted: dict[str, Any], pem: Path,
                         root: Path) -> KafkaSettings:
    """KafkaSettings from the container's env, its mount's files stood in for under root."""
    root.mkdir()
    contents = {"sasl-password": "s3cret-from-the-secret\n",
                "ca.crt": (pem / "redrive-chart-test.crt").read_text(),
                "client.crt": (pem / "redrive-chart-test.crt").read_text(),
                "client.key": (pem / "redrive-chart-test.key").read_text()}
    for name in mounted:
        (root / name).write_text(contents[name])
    environ = {name: entry["value"].replace(MOUNT, str(root))
               for name, entry in env_map(c).items() if "value" in entry}
    env = Env(environ)
    settings = KafkaSettings.from_env(env)
    env.check()
    return settings


@pytest.mark.parametrize("which", ["kafka-auth", "kafka-tls", "kafka-external-sasl",
                                   "scram+tls", "external-mtls"])
def test_the_services_accept_the_rendered_settings(which: str, pem: Path,
                                                   tmp_path: Path) -> None:
    for role, (c, pod) in services(docs_of(which)).items():
        mounted = files(credentials_volume(c, pod))
        settings = parse_as_the_service(c, mounted, pem, tmp_path / role)
        assert settings.security_protocol == env_value(c, "REDRIVE_KAFKA_SECURITY_PROTOCOL")
        if settings.uses_sasl:
            assert settings.sasl_password == "s3cret-from-the-secret"
            assert settings.sasl_username == env_value(c, "REDRIVE_KAFKA_SASL_USERNAME")
        if "client.crt" in mounted:
            assert settings.ssl_cert_file and settings.ssl_key_file


# --- values that must be refused --------------------------------------------------------

def template(*sets: str) -> str:
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    return helm(*args)


@pytest.mark.parametrize(("sets", "message"), [
    # SASL needs each service's user name and a Secret with its password (values schema).
    (("kafka.security.protocol=SASL_SSL",), "passwordSecret"),
    (("kafka.security.protocol=SASL_PLAINTEXT", "kafka.security.sidecar.username=a",
      "kafka.security.sidecar.passwordSecret.name=a-pw"), "retryWorker"),
    (("kafka.security.protocol=SASL_SSL", "kafka.security.sidecar.passwordSecret.name=pw",
      "kafka.security.retryWorker.username=w",
      "kafka.security.retryWorker.passwordSecret.name=w-pw"), "sidecar/username"),
    (("kafka.security.protocol=TLS",), "protocol"),
    (("kafka.security.saslMechanism=GSSAPI",), "saslMechanism"),
    (("kafka.strimzi.enabled=true", "kafka.strimzi.users.enabled=true",
      "kafka.strimzi.users.authentication=tls"), "tls"),
    (("kafka.strimzi.users.authentication=scram-sha-256",), "authentication"),
])
def test_the_schema_refuses(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(HelmError, match="schema") as info:
        template(*sets)
    assert message in str(info.value)


@pytest.mark.parametrize(("sets", "message"), [
    (("kafka.security.caSecret.name=ca",), "does not use TLS"),
    (("kafka.security.sidecar.clientCertSecret.name=c",), "does not use TLS"),
    (("kafka.security.sidecar.username=u",), "SASL_SSL"),
    (("kafka.security.protocol=SSL", "kafka.security.caSecret.name=a",
      "kafka.security.caConfigMap.name=b"), "not both"),
])
def test_settings_that_would_be_ignored_fail_loudly(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        template(*sets)


def test_sasl_without_a_worker_needs_only_the_sidecars_credentials() -> None:
    out = template("kafka.security.protocol=SASL_SSL", "kafka.security.sidecar.username=s",
                   "kafka.security.sidecar.passwordSecret.name=s-pw", "retryWorker.enabled=false",
                   "retryWorker.targetUrl=http://x")
    assert "REDRIVE_KAFKA_SASL_PASSWORD_FILE" in out


def test_helm_lint_refuses_sasl_without_a_password_secret() -> None:
    with pytest.raises(HelmError, match="passwordSecret"):
        helm("lint", "--strict", str(CHART), "--set", "kafka.security.protocol=SASL_SSL",
             "--set", "kafka.security.sidecar.username=s",
             "--set", "kafka.security.retryWorker.username=w")
