"""Kopf wiring: watch events feed the caches and the work queue, nothing more.

Only `@kopf.on.event` handlers are used: they keep no progress or diff-base annotations
and add no finalizers, so Kopf itself never writes to a WorkOrder. All decisions happen
in the reconciler, keyed by WorkOrder, whatever kind of object the event was about.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import kopf

from workgate.api.common import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from workgate.k8s.api import BUILDRUNS, LEASES, KubeApi
from workgate.k8s.owners import workgate_owner
from workgate.k8s.waitpoints import get_or_create_secret
from workgate.operator.admission import register_admission
from workgate.operator.admission_claims import register_claim_admission
from workgate.operator.cache import ObjectCache
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

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf builds a diff base (a deep copy of the body) for every event, for handlers that
    react to changes; on-event handlers never read it, and workgate has no others."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def _owner_workorder(body: dict[str, Any]) -> str | None:
    owner = workgate_owner(body)
    return owner[0] if owner else None


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
        register_admission(registry, reconciler.api, config, gates.keys, gates.metrics)
        register_claim_admission(registry, reconciler.api, config)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are ours: one per transition
        # Only the Leases and BuildRuns workgate made, filtered by the API server: a real
        # cluster has a node heartbeat Lease per node renewed every 10 s.
        settings.watching.label_selectors[LEASES.group, LEASES.plural] = MANAGED_SELECTOR
        settings.watching.label_selectors[BUILDRUNS.group, BUILDRUNS.plural] = MANAGED_SELECTOR
        settings.watching.server_timeout = 300
        settings.persistence.diffbase_storage = NoDiffBase()
        if config.webhook:  # registered by workgate, scoped (operator/webhooks.py)
            settings.admission.server = await webhook_server(reconciler.api, config, registry)

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.event(GROUP, VERSION, "workorders", registry=registry)
    async def workorder_event(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        reconciler.observe_workorder(key, body, deleted=event.get("type") == "DELETED")

    def children(cache: ObjectCache[tuple[str, str]], by_owner: bool) -> Any:
        """A handler for Leases (cached by owner) or BuildRuns (cached by name)."""

        async def on_child_event(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            owner = _owner_workorder(body)
            if owner is None:
                return
            namespace = body["metadata"]["namespace"]
            key = (namespace, owner if by_owner else body["metadata"]["name"])
            if event.get("type") == "DELETED":
                cache.deleted(key, body)
            else:
                cache.observe(key, body)
            reconciler.queue.add((namespace, owner))

        return on_child_event

    for resource, cache, by_owner in (
        (LEASES, reconciler.leases, True),
        (BUILDRUNS, reconciler.build_runs, False),
    ):
        kopf.on.event(
            resource.group,
            resource.version,
            resource.plural,
            id=resource.plural,
            registry=registry,
            labels={LABEL_MANAGED_BY: MANAGED_BY},
        )(children(cache, by_owner))

    @kopf.on.event(GROUP, VERSION, "waitpoints", registry=registry)
    async def waitpoint_event(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        owner = gates.observe_waitpoint(body, deleted=event.get("type") == "DELETED")
        gates.queue.add((body["metadata"]["namespace"], body["metadata"]["name"]))
        reconciler.queue.add(owner)

    @kopf.on.event(GROUP, VERSION, "signals", registry=registry)
    async def signal_event(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        target = gates.observe_signal(body, deleted=event.get("type") == "DELETED")
        gates.queue.add(target)

    return registry
