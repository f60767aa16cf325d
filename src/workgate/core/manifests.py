"""Parse and police the multi-document YAML embedded in a WorkOrder.

Everything here is hostile input: the YAML is size-limited, anchors/aliases are refused
(an alias bomb is tiny as YAML and enormous as JSON), only allowlisted kinds pass, and
nothing may aim at another namespace or carry ownership metadata of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from workgate.api.workorder import MAX_YAML_CONTENT_BYTES
from workgate.core.naming import is_dns_subdomain

SHIPWRIGHT_BUILD = ("shipwright.io/v1beta1", "Build")
DEFAULT_ALLOWED_KINDS: frozenset[tuple[str, str]] = frozenset({SHIPWRIGHT_BUILD})
MAX_DOCUMENTS = 16
MAX_DEPTH = 32
# Metadata an embedded object may carry; everything else (ownerReferences, finalizers,
# namespace, managedFields, ...) is the operator's to set.
_ALLOWED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})


class ManifestError(ValueError):
    """The embedded YAML cannot be applied. `reason` is a CamelCase event/status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ManifestError("InvalidYAML", "YAML anchors and aliases are not allowed")
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class EmbeddedObject:
    api_version: str
    kind: str
    name: str
    body: dict[str, Any]


def _depth(node: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(node, 1)]
    deepest = 0
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


def parse_documents(text: str) -> list[dict[str, Any]]:
    """Load the non-empty YAML documents of `text`, refusing anything risky or malformed."""
    size = len(text.encode("utf-8"))
    if size > MAX_YAML_CONTENT_BYTES:
        raise ManifestError(
            "PayloadTooLarge", f"yamlContent is {size} bytes; the limit is {MAX_YAML_CONTENT_BYTES}"
        )
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_NoAliasLoader) if doc is not None]
    except ManifestError:
        raise
    except yaml.YAMLError as exc:
        raise ManifestError("InvalidYAML", f"yamlContent is not valid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError("InvalidYAML", "yamlContent is nested too deeply") from None
    if not documents:
        raise ManifestError("InvalidManifest", "yamlContent holds no YAML document")
    if len(documents) > MAX_DOCUMENTS:
        raise ManifestError(
            "InvalidManifest",
            f"yamlContent holds {len(documents)} documents; at most {MAX_DOCUMENTS}",
        )
    for number, doc in enumerate(documents, start=1):
        if not isinstance(doc, dict):
            raise ManifestError("InvalidManifest", f"document {number} is not a mapping")
        if _depth(doc, MAX_DEPTH) > MAX_DEPTH:
            raise ManifestError("InvalidManifest", f"document {number} is nested too deeply")
    return documents


def validate_objects(
    documents: Iterable[dict[str, Any]],
    *,
    namespace: str,
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED_KINDS,
) -> list[EmbeddedObject]:
    """Check each document against the allowlist and confine it to `namespace`.

    Returns normalised bodies: namespace set, metadata reduced to name/labels/annotations.
    """
    objects: list[EmbeddedObject] = []
    seen: set[tuple[str, str]] = set()
    for number, doc in enumerate(documents, start=1):
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise ManifestError("InvalidManifest", f"document {number} lacks apiVersion or kind")
        if (api_version, kind) not in allowed_kinds:
            allowed = ", ".join(sorted(f"{k} ({v})" for v, k in allowed_kinds))
            raise ManifestError(
                "ForbiddenKind",
                f"document {number} is a {kind} ({api_version}); only {allowed} may be embedded",
            )
        metadata = doc.get("metadata")
        if not isinstance(metadata, dict):
            raise ManifestError("InvalidManifest", f"document {number} ({kind}) has no metadata")
        name = metadata.get("name")
        if not isinstance(name, str) or not is_dns_subdomain(name):
            raise ManifestError(
                "InvalidManifest", f"document {number} ({kind}) needs a valid metadata.name"
            )
        target = metadata.get("namespace", namespace)
        if target != namespace:
            raise ManifestError(
                "ForeignNamespace",
                f"{kind} {name!r} aims at namespace {target!r}; embedded objects must stay in "
                f"the WorkOrder's namespace {namespace!r}",
            )
        extra = sorted(set(metadata) - _ALLOWED_METADATA)
        if extra:
            raise ManifestError(
                "InvalidManifest",
                f"{kind} {name!r} sets metadata.{extra[0]}; only name, labels and annotations "
                "may be set",
            )
        if (kind, name) in seen:
            raise ManifestError("InvalidManifest", f"{kind} {name!r} appears twice")
        seen.add((kind, name))
        body = {k: v for k, v in doc.items() if k not in {"metadata", "status"}}
        body["metadata"] = {**metadata, "namespace": namespace}
        objects.append(EmbeddedObject(api_version, kind, name, body))
    return objects


def parse_build_work(
    text: str,
    *,
    namespace: str,
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED_KINDS,
) -> tuple[list[EmbeddedObject], EmbeddedObject]:
    """Objects to apply for `build` work, and the one Shipwright Build to run."""
    objects = validate_objects(
        parse_documents(text), namespace=namespace, allowed_kinds=allowed_kinds
    )
    builds = [obj for obj in objects if (obj.api_version, obj.kind) == SHIPWRIGHT_BUILD]
    if len(builds) != 1:
        raise ManifestError(
            "InvalidManifest",
            f"build work needs exactly one Shipwright Build ({SHIPWRIGHT_BUILD[0]}); "
            f"found {len(builds)}",
        )
    return objects, builds[0]
