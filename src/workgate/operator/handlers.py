"""Kopf wiring: the admission webhooks, their serving certificate, start-up and login.

The watches are workgate's own (operator/informers.py); Kopf registers no resource
handlers, so it keeps no progress or diff-base annotations and adds no finalizers: it
never writes to a WorkOrder. All decisions happen in the reconcilers.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from workgate.k8s.api import KubeApi
from workgate.k8s.waitpoints import get_or_create_secret
from workgate.operator.admission import register_admission
from workgate.operator.admission_claims import register_claim_admission
from workgate.operator.certs import (
    ServingCert,
    issue_serving_cert,
    load_serving_cert,
    write_serving_cert,
)
from workgate.operator.config import OperatorConfig
from workgate.operator.waitpoints import WaitpointReconciler
from workgate.operator.webhooks import (
    RegisteringWebhookServer,
    apply_webhook_configurations,
    build_webhook_configurations,
)
from workgate.operator.workorders import WorkOrderReconciler


async def serving_cert(api: KubeApi, config: OperatorConfig, host: str) -> ServingCert:
    """Mounted files (e.g. cert-manager's) first; else the Secret all replicas share, which
    the first replica creates; else a certificate of this process's own."""
    cert_dir = Path(config.webhook_cert_dir) if config.webhook_cert_dir else None
    if cert_dir and (cert_dir / "tls.crt").exists():
        return load_serving_cert(cert_dir)
    scratch = Path(tempfile.mkdtemp(prefix="workgate-webhook-"))
    if not config.webhook_cert_secret:
        return issue_serving_cert(scratch, [host])

    def make() -> dict[str, str]:
        cert = issue_serving_cert(scratch / "new", [host])
        files = {
            "ca.crt": cert.ca_pem,
            "tls.crt": cert.cert_path.read_bytes(),
            "tls.key": cert.key_path.read_bytes(),
        }
        return {k: base64.b64encode(v).decode() for k, v in files.items()}

    secret = await get_or_create_secret(
        api, config.operator_namespace, config.webhook_cert_secret, make
    )
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    return write_serving_cert(scratch / "shared", data["ca.crt"], data["tls.crt"], data["tls.key"])


async def webhook_server(
    api: KubeApi, config: OperatorConfig, registry: kopf.OperatorRegistry
) -> kopf.WebhookServer:
    host = config.webhook_host or config.webhook_addr
    cert = await serving_cert(api, config, host)

    async def register(client_config: Mapping[str, Any]) -> None:
        configurations = build_webhook_configurations(
            registry._webhooks.get_all_handlers(),
            client_config,
            config.webhook_config_name,
            config.namespaces,
        )
        await apply_webhook_configurations(api, configurations)

    return RegisteringWebhookServer(
        register=register,
        service=config.webhook_service,
        addr=config.webhook_addr,
        port=config.webhook_port,
        host=host,
        certfile=str(cert.cert_path),
        pkeyfile=str(cert.key_path),
        cadata=cert.ca_pem or None,
    )


def build_registry(
    reconciler: WorkOrderReconciler, gates: WaitpointReconciler
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    config = reconciler.config
    if config.webhook:
        register_admission(
            registry,
            reconciler.api,
            config,
            gates.keys,
            gates.metrics,
            gates.waitpoints.get,
            gates.permits,
        )
        register_claim_admission(registry, reconciler.api, config)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are ours: one per transition
        if config.webhook:  # registered by workgate, scoped (operator/webhooks.py)
            settings.admission.server = await webhook_server(reconciler.api, config, registry)

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    return registry
