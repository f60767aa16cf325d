"""Generate the CustomResourceDefinitions in `crds/` from the Pydantic models.

Pydantic emits JSON Schema with `$ref`s, `anyOf [T, null]` and titles; Kubernetes wants
a structural OpenAPI v3 schema: everything inlined, a `type` on every node, no titles.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from workgate.api.common import CATEGORY, GROUP, VERSION
from workgate.api.waitpoint import Signal, Waitpoint
from workgate.api.workorder import WorkOrder

JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    model: type[BaseModel]
    kind: str
    plural: str
    short_names: list[str]
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    # Fields usable in `--field-selector` (CRD selectableFields), e.g. agents' watches.
    selectable_fields: list[str] = field(default_factory=list)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _column(
    name: str, path: str, type_: str = "string", *, wide: bool = False, **extra: Any
) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if wide:
        col["priority"] = 1
    col.update(extra)
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[Kind, ...] = (
    Kind(
        model=WorkOrder,
        kind="WorkOrder",
        plural="workorders",
        short_names=["wo", "wos"],
        printer_columns=[
            _column("Phase", ".status.phase"),
            _column("Type", ".spec.workType"),
            _column("Retries", ".status.retryCount", "integer"),
            _column("Waiting-On", ".status.waitingOn"),
            _column("Claimed-By", ".status.claimedBy"),
            _column("Next-Retry", ".status.nextRetryAfter", "date"),
            AGE,
            _column("Attempt", ".status.attempt", "integer", wide=True),
            _column("Priority", ".spec.priority", "integer", wide=True),
            _column("Queue-Position", ".status.queue.position", "integer", wide=True),
            _column("Last-Error", ".status.lastError", wide=True),
        ],
        selectable_fields=[".spec.workType", ".status.phase"],
    ),
    Kind(
        model=Waitpoint,
        kind="Waitpoint",
        plural="waitpoints",
        short_names=["wp"],
        printer_columns=[
            _column("Work-Order", ".spec.workOrderName"),
            _column("Key", ".spec.key"),
            _column("State", ".status.state"),
            _column("Required", ".spec.requiredSignalNames"),
            _column("Received", ".status.receivedCount", "integer"),
            _column("Waiting-For", ".status.waitingFor"),
            # A string: kubectl renders a `date` column in the future as <invalid>.
            _column("Expires", ".status.expiresAt"),
            AGE,
            _column("Close-Reason", ".status.closeReason", wide=True),
            _column("Author", ".status.author", wide=True),
        ],
    ),
    Kind(
        model=Signal,
        kind="Signal",
        plural="signals",
        short_names=["sig"],
        printer_columns=[
            _column("Waitpoint", ".spec.waitpointName"),
            _column("Signal", ".spec.signalName"),
            _column("Phase", ".status.phase"),
            _column("Reason", ".status.reason"),
            AGE,
        ],
    ),
)

_DROP_KEYS = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, JsonSchema]) -> Any:
    """Inline `$ref`s, collapse nullable unions, drop what Kubernetes rejects."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # a field's own description wins over the type's docstring
        node = target
    for union in ("anyOf", "oneOf"):
        if union in node:
            variants = [v for v in node[union] if v != {"type": "null"}]
            if len(variants) != 1:
                raise ValueError(f"cannot express union {node[union]!r} structurally")
            merged = dict(variants[0])
            rest = {k: v for k, v in node.items() if k != union}
            merged.update(rest)
            node = merged
            if "$ref" in node:
                return _structural(node, defs)
    if node.get("default", "") is None:
        del node["default"]
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in {"items", "additionalProperties"} and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[BaseModel]) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    body = _structural(raw, defs)
    body.pop("description", None)
    props = body.setdefault("properties", {})
    schema: JsonSchema = {
        "type": "object",
        "description": model.__doc__.strip() if model.__doc__ else "",
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource.",
            },
            "metadata": {"type": "object"},
            **props,
        },
    }
    if body.get("required"):
        schema["required"] = body["required"]
    return schema


def build_crd(kind: Kind) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.printer_columns,
                    **(
                        {"selectableFields": [{"jsonPath": p} for p in kind.selectable_fields]}
                        if kind.selectable_fields
                        else {}
                    ),
                    "schema": {"openAPIV3Schema": openapi_schema(kind.model)},
                }
            ],
        },
    }


HEADER = (
    "# Generated from the Pydantic models in src/workgate/api by `workgate crds generate`.\n"
    "# Do not edit by hand: edit the models and regenerate.\n"
)


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(build_crd(kind), sort_keys=False, width=100)


def crd_filename(kind: Kind) -> str:
    return f"{GROUP}_{kind.plural}.yaml"


def render_all() -> dict[str, str]:
    return {crd_filename(kind): render(kind) for kind in KINDS}


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drifted(directory: Path) -> list[str]:
    """Names of CRD files under `directory` that differ from what the models generate."""
    return [
        name
        for name, text in render_all().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
