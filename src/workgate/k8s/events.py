"""Kubernetes Events about workgate objects (what `kubectl describe` shows)."""

from __future__ import annotations

import logging
import secrets

from workgate.api.common import format_time, now_utc
from workgate.k8s.api import EVENTS, ApiError, Body, KubeApi

log = logging.getLogger(__name__)
COMPONENT = "workgate-operator"


def build_event(involved: Body, type_: str, reason: str, message: str, *, instance: str) -> Body:
    meta = involved["metadata"]
    stamp = format_time(now_utc().replace(microsecond=0))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name'][:200]}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    api: KubeApi, involved: Body, type_: str, reason: str, message: str, *, instance: str
) -> None:
    """Best effort: an Event that cannot be written must not fail the reconcile."""
    event = build_event(involved, type_, reason, message, instance=instance)
    try:
        await api.create(EVENTS.path(involved["metadata"]["namespace"]), event)
    except ApiError as exc:
        log.warning("could not post event %s for %s: %s", reason, involved["metadata"]["name"], exc)
