"""The admission webhook configurations, written by workgate rather than by Kopf.

Kopf serves the webhooks; workgate registers them, because a registration must reach
only what the operator owns: a namespace-scoped operator's webhooks carry a
namespaceSelector for its namespaces, and each handler's label filter becomes an
objectSelector (claim Leases: only those labelled managed-by=workgate). Every webhook
fails closed (failurePolicy Fail) and so outlives the process that registered it: a real
deployment keeps it (the next replica serves it), while `workgate up` on the embedded
control plane removes it when it stops, so the cluster it leaves behind is usable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf

from workgate.k8s.api import ApiError, Body, KubeApi

log = logging.getLogger(__name__)

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
KINDS = {"validating": "ValidatingWebhookConfiguration", "mutating": "MutatingWebhookConfiguration"}
PLURALS = {
    "validating": "validatingwebhookconfigurations",
    "mutating": "mutatingwebhookconfigurations",
}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _client_config(client_config: Mapping[str, Any], handler_id: str) -> dict[str, Any]:
    """Kopf routes a request to its handler by the last path segment."""
    config = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in client_config.items()}
    if "url" in config:
        config["url"] = f"{str(config['url']).rstrip('/')}/{handler_id}"
    if "service" in config:
        config["service"]["path"] = f"{config['service'].get('path', '')}/{handler_id}"
    return config


def build_webhook_configurations(
    handlers: Iterable[Any],
    client_config: Mapping[str, Any],
    name: str,
    namespaces: Iterable[str] = (),
) -> dict[str, Body]:
    """The Validating/MutatingWebhookConfiguration bodies (by kind key) for Kopf's
    webhook handlers: one webhook per handler, scoped to `namespaces` when given."""
    scoped = sorted(set(namespaces))
    configurations: dict[str, Body] = {}
    for handler in handlers:
        selector = handler.selector
        reason = str(getattr(handler.reason, "value", handler.reason))
        labels = {k: v for k, v in (handler.labels or {}).items() if isinstance(v, str)}
        webhook: dict[str, Any] = {
            "name": f"{str(handler.id).replace('/', '.').replace('_', '-')}.{name}",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun" if handler.side_effects else "None",
            "failurePolicy": "Ignore" if handler.ignore_failures else "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "clientConfig": _client_config(client_config, str(handler.id)),
            "rules": [
                {
                    "apiGroups": [selector.group or ""],
                    "apiVersions": [selector.version],
                    # Kopf keeps a resource named positionally in `any_name`.
                    "resources": [selector.plural or selector.any_name],
                    "operations": list(handler.operations or ["*"]),
                    "scope": "Namespaced",
                }
            ],
        }
        if labels:
            webhook["objectSelector"] = {"matchLabels": labels}
        if scoped:
            webhook["namespaceSelector"] = {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": scoped}
                ]
            }
        configuration = configurations.setdefault(
            reason,
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": KINDS[reason],
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "workgate"}},
                "webhooks": [],
            },
        )
        configuration["webhooks"].append(webhook)
    return configurations


async def apply_webhook_configurations(api: KubeApi, configurations: dict[str, Body]) -> None:
    for reason, body in configurations.items():
        path = f"{ADMISSION}/{PLURALS[reason]}/{body['metadata']['name']}"
        await api.apply(path, body)


async def remove_webhook_configurations(api: KubeApi, name: str) -> None:
    for plural in PLURALS.values():
        try:
            await api.delete(f"{ADMISSION}/{plural}/{name}")
        except ApiError as exc:
            if not exc.not_found:
                log.warning("could not remove %s %s: %s", plural, name, exc)


class RegisteringWebhookServer(kopf.WebhookServer):
    """Kopf's webhook server, which also registers the webhooks each time its client
    configuration (address, CA bundle) is known, and optionally routes the API server
    through a Service (in a cluster, the API server reaches pods through Services)."""

    def __init__(
        self,
        *,
        register: Callable[[Mapping[str, Any]], Awaitable[None]],
        service: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.register = register
        self.service: dict[str, Any] | None = None
        if service:
            namespace, _, rest = service.partition("/")
            svc, _, port = rest.partition(":")
            self.service = {
                "namespace": namespace,
                "name": svc,
                "port": int(port or 443),
                "path": "",
            }

    async def __call__(self, fn: Any) -> Any:
        async for config in super().__call__(fn):
            routed: dict[str, Any] = dict(config)
            if self.service is not None:
                routed = {"service": dict(self.service)}
                if "caBundle" in config:
                    routed["caBundle"] = config["caBundle"]
            await self.register(routed)
            yield routed
