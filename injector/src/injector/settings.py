"""Injector settings: every ``REDRIVE_*`` variable it reads, parsed once into frozen groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redrive.settings import AdminSettings, Env, LogSettings, PodIdentity

NATIVE_MODES = ("auto", "true", "false")


@dataclass(frozen=True)
class WebhookSettings:
    host: str = "0.0.0.0"
    """Address the HTTPS webhook binds (``REDRIVE_INJECTOR_HOST``)."""
    port: int = 9443
    """HTTPS port of ``POST /mutate`` (``REDRIVE_INJECTOR_PORT``)."""
    tls_cert_file: Path | None = None
    """PEM certificate (``REDRIVE_INJECTOR_TLS_CERT_FILE``), e.g. from cert-manager; the
    file is re-read when it changes. Unset: the injector makes its own (see ``certs``)."""
    tls_key_file: Path | None = None
    """PEM private key (``REDRIVE_INJECTOR_TLS_KEY_FILE``); set with the certificate."""


@dataclass(frozen=True)
class CertSettings:
    webhook_configuration: str | None = None
    """MutatingWebhookConfiguration whose caBundle gets the self-made CA
    (``REDRIVE_INJECTOR_WEBHOOK_CONFIGURATION``); unset: nothing is patched (local runs)."""
    service_name: str = "redrive-injector"
    """Service in front of the injector (``REDRIVE_INJECTOR_SERVICE_NAME``): the
    certificate is made for ``<service>.<namespace>.svc``."""
    validity_days: int = 30
    """Lifetime of a self-made certificate (``REDRIVE_INJECTOR_CERT_VALIDITY_DAYS``); it is
    renewed after two thirds of it."""
    api_url: str = "https://kubernetes.default.svc:443"
    """The API server, from ``KUBERNETES_SERVICE_HOST`` / ``KUBERNETES_SERVICE_PORT`` (set in
    every pod)."""
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    """Where the pod's token and the cluster CA are (``REDRIVE_INJECTOR_SERVICE_ACCOUNT_DIR``)."""


@dataclass(frozen=True)
class InjectionSettings:
    template_file: Path | None = None
    """The chart's injection template (``REDRIVE_INJECTOR_TEMPLATE_FILE``); unset uses the
    packaged default (the chart's defaults)."""
    default_intercept: str = "none"
    """``redrive.io/intercept`` of pods without the annotation
    (``REDRIVE_INJECTOR_DEFAULT_INTERCEPT``): ``none`` (the Service targets the sidecar's
    port; fits the ``restricted`` Pod Security level) or ``iptables`` (the label alone
    protects an unmodified Deployment and Service; needs NET_ADMIN)."""
    native_sidecar: str = "auto"
    """``REDRIVE_INJECTOR_NATIVE_SIDECAR``: ``auto`` follows the template (the chart decides
    from the cluster's version), ``true``/``false`` force it."""


@dataclass(frozen=True)
class Settings:
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    certs: CertSettings = field(default_factory=CertSettings)
    injection: InjectionSettings = field(default_factory=InjectionSettings)
    admin: AdminSettings = field(default_factory=lambda: AdminSettings(port=9903))
    logging: LogSettings = field(default_factory=LogSettings)
    identity: PodIdentity = field(default_factory=PodIdentity)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse ``environ``; raises ConfigError naming every invalid variable."""
        env = Env(environ)
        cert = env.optional("REDRIVE_INJECTOR_TLS_CERT_FILE")
        key = env.optional("REDRIVE_INJECTOR_TLS_KEY_FILE")
        if bool(cert) != bool(key):
            env.problem("REDRIVE_INJECTOR_TLS_CERT_FILE",
                        "set it together with REDRIVE_INJECTOR_TLS_KEY_FILE, or neither "
                        "(the injector then makes its own certificate)")
        for name, value in (("REDRIVE_INJECTOR_TLS_CERT_FILE", cert),
                            ("REDRIVE_INJECTOR_TLS_KEY_FILE", key)):
            if value and not Path(value).is_file():
                env.problem(name, f"{value} is not a readable file")
        template = env.optional("REDRIVE_INJECTOR_TEMPLATE_FILE")
        if template and not Path(template).is_file():
            env.problem("REDRIVE_INJECTOR_TEMPLATE_FILE", f"{template} is not a readable file")
        settings = cls(
            webhook=WebhookSettings(
                host=env.string("REDRIVE_INJECTOR_HOST", "0.0.0.0"),
                port=env.port("REDRIVE_INJECTOR_PORT", 9443),
                tls_cert_file=Path(cert) if cert else None,
                tls_key_file=Path(key) if key else None),
            certs=CertSettings(
                webhook_configuration=env.optional("REDRIVE_INJECTOR_WEBHOOK_CONFIGURATION"),
                service_name=env.string("REDRIVE_INJECTOR_SERVICE_NAME", "redrive-injector"),
                validity_days=env.integer("REDRIVE_INJECTOR_CERT_VALIDITY_DAYS", 30,
                                          minimum=1, maximum=3650),
                api_url=_api_url(env),
                service_account_dir=Path(env.string(
                    "REDRIVE_INJECTOR_SERVICE_ACCOUNT_DIR",
                    "/var/run/secrets/kubernetes.io/serviceaccount"))),
            injection=InjectionSettings(
                template_file=Path(template) if template else None,
                default_intercept=env.string("REDRIVE_INJECTOR_DEFAULT_INTERCEPT", "none",
                                             choices=("none", "iptables")),
                native_sidecar=env.string("REDRIVE_INJECTOR_NATIVE_SIDECAR", "auto",
                                          choices=NATIVE_MODES)),
            admin=AdminSettings.from_env(env, 9903),
            logging=LogSettings.from_env(env),
            identity=PodIdentity.from_env(env),
        )
        env.check()
        return settings


def _api_url(env: Env) -> str:
    host = env.string("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = env.port("KUBERNETES_SERVICE_PORT", 443)
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"https://{host}:{port}"
