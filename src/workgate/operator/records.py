"""What the operator's caches keep of each object: what its decisions read, nothing more.

An operator with 10,000 finished WorkOrders holds as many claim Leases (a successful
attempt's Lease is its record) and BuildRuns. Whole bodies (labels, managedFields, a
BuildRun's spec and status, the owner references' every field) would be most of its
memory; a record keeps what `LeaseView.from_body`, `shipwright.build_run_view` and
`owners.controlled_by` read, plus the uid and resourceVersion the cache orders versions
by. Strings every record repeats (namespaces, owner kinds, condition words) are shared.
"""

from __future__ import annotations

import sys
from typing import Any

from workgate.api.wire import GROUP
from workgate.k8s.api import Body
from workgate.k8s.owners import controller_of

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # a copy of the spec
LEASE_SPEC = ("holderIdentity", "acquireTime", "renewTime", "leaseDurationSeconds")
CONDITION_FIELDS = ("type", "status", "reason", "message")


def _shared(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) and len(value) <= 64 else value


def _meta(body: Body, **more: Any) -> dict[str, Any]:
    """namespace, name, uid, resourceVersion and the controller reference, if any."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {
        "namespace": _shared(meta.get("namespace", "")),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
        **more,
    }
    ref = controller_of(body)
    if ref is not None:
        fields = ("apiVersion", "kind", "name", "uid", "controller")
        shared = ("apiVersion", "kind")
        kept["ownerReferences"] = [
            {k: _shared(ref[k]) if k in shared else ref[k] for k in fields if k in ref}
        ]
    return kept


def _our_annotations(body: Body) -> dict[str, str]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {_shared(k): v for k, v in annotations.items() if k.startswith(f"{GROUP}/")}


def lease_record(body: Body) -> Body:
    """A claim Lease: its spec's holder and times, and workgate's annotations."""
    spec = body.get("spec") or {}
    return {
        "metadata": _meta(body, annotations=_our_annotations(body)),
        "spec": {  # the holder is most often the operator itself
            k: _shared(spec[k]) if k == "holderIdentity" else spec[k]
            for k in LEASE_SPEC
            if k in spec
        },
    }


def build_run_record(body: Body) -> Body:
    """A BuildRun: its state (cancelled or not), its Succeeded condition and workgate's
    annotations."""
    record: dict[str, Any] = {"metadata": _meta(body, annotations=_our_annotations(body))}
    state = (body.get("spec") or {}).get("state")
    if state is not None:
        record["spec"] = {"state": _shared(state)}
    conditions = (body.get("status") or {}).get("conditions") or []
    succeeded = next((c for c in conditions if c.get("type") == "Succeeded"), None)
    if succeeded is not None:
        kept = {k: _shared(succeeded[k]) for k in CONDITION_FIELDS if k in succeeded}
        record["status"] = {"conditions": [kept]}
    return record


def workorder_record(body: Body) -> Body:
    """A WorkOrder as it is (its spec and status are what decisions read), less its
    managedFields and kubectl's copy of the spec; the words its conditions repeat (and
    their times, shared by the conditions of one status write) are shared."""
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        return body
    lean = {k: v for k, v in meta.items() if k != "managedFields"}
    lean["namespace"] = _shared(meta.get("namespace", ""))
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        lean["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    record = {**body, "metadata": lean}
    for field in ("apiVersion", "kind"):
        if field in body:
            record[field] = _shared(body[field])
    status = body.get("status")
    if isinstance(status, dict) and isinstance(status.get("conditions"), list):
        conditions = [
            {k: _shared(v) for k, v in c.items()} if isinstance(c, dict) else c
            for c in status["conditions"]
        ]
        record["status"] = {**status, "conditions": conditions}
    return record
