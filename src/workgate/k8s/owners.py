"""Ownership of a WorkOrder's children: the one home for owner references and labels.

Every child (claim Lease, embedded Build, BuildRun, Waitpoint, token Secret) carries a
controller owner reference, and is recognised by that reference's uid, never by its name
alone: a name can be squatted by a foreign object, or still be held by the child of a
deleted WorkOrder of the same name that the garbage collector has not removed yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workgate.api.wire import API_VERSION, GROUP, LABEL_MANAGED_BY, LABEL_WORKORDER, MANAGED_BY
from workgate.core.naming import label_value
from workgate.k8s.api import Body


def owner_reference(owner: Body, kind: str = "WorkOrder") -> dict[str, Any]:
    """A controller reference to `owner` (a WorkOrder, or a Waitpoint for its Secret)."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def child_labels(workorder_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKORDER: label_value(workorder_name)}


def controller_of(body: Body) -> dict[str, Any] | None:
    """The controller owner reference of `body`, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def workgate_owner(body: Body, kind: str = "WorkOrder") -> tuple[str, str] | None:
    """(name, uid) of the workgate object of `kind` that controls `body`, if one does."""
    ref = controller_of(body)
    if ref is None or ref.get("kind") != kind:
        return None
    if not str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
        return None
    return str(ref.get("name", "")), str(ref.get("uid", ""))


def controlled_by(body: Body, owner_uid: str) -> bool:
    ref = controller_of(body)
    return ref is not None and bool(owner_uid) and ref.get("uid") == owner_uid


@dataclass(frozen=True)
class NameTaken:
    """A child's deterministic name is held by an object this WorkOrder does not control."""

    kind: str
    name: str
    holder: str  # "WorkOrder x (uid ...)", "Job y", or "no controller"
    owner: str = "this WorkOrder"  # whose child the name is

    @property
    def message(self) -> str:
        return (
            f"{self.kind} {self.name} already exists and is controlled by {self.holder}, "
            f"not by {self.owner}; delete or rename it to let {self.owner} proceed"
        )


def name_taken(kind: str, body: Body, owner: str = "this WorkOrder") -> NameTaken:
    ref = controller_of(body)
    if ref is None:
        holder = "no controller"
    else:
        holder = f"{ref.get('kind', '?')} {ref.get('name', '?')} (uid {ref.get('uid', '?')})"
    return NameTaken(kind, str(body["metadata"]["name"]), holder, owner)
