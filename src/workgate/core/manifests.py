"""Parse and police the multi-document YAML embedded in a WorkOrder.

Everything here is hostile input: the YAML is size-limited, anchors/aliases are refused
(an alias bomb is tiny as YAML and enormous as JSON), only allowlisted kinds pass, and
nothing may aim at another namespace or carry ownership metadata of its own.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
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


# libyaml's loader, when PyYAML was built with it: the same safe constructor, parsed in C
# (with libyaml's own nesting limit). It cannot refuse aliases as it composes, so it reads
# only text without a `*`: YAML has no alias without that indicator.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)


def _load_all(text: str) -> list[Any]:
    loader = _FAST_LOADER if _FAST_LOADER is not None and "*" not in text else _NoAliasLoader
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]


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
        documents = _load_all(text)
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


BuildWork = tuple[list[EmbeddedObject], EmbeddedObject]


class _ParseCache:
    """parse_build_work's results by (digest of the text, namespace, allowed kinds): every
    reconcile of a WorkOrder asks again, and its spec changes only with its generation.
    Bounded by entries and by the bytes of text they stand for (the parsed objects are a
    few times that); least recently used first out. Failures are remembered too."""

    def __init__(self, max_entries: int = 1024, max_text_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_entries, self.max_text_bytes = max_entries, max_text_bytes
        self._entries: OrderedDict[Any, tuple[int, BuildWork | ManifestError]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> BuildWork | ManifestError | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Any, size: int, value: BuildWork | ManifestError) -> None:
        if size > self.max_text_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[0]
            self._entries[key] = (size, value)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_text_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._entries)


_parsed = _ParseCache()


def parse_build_work(
    text: str,
    *,
    namespace: str,
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED_KINDS,
) -> BuildWork:
    """Objects to apply for `build` work, and the one Shipwright Build to run.

    Remembered (see `_ParseCache`): the objects returned are shared between calls and
    must not be changed (`k8s.shipwright.build_apply_body` copies what it changes)."""
    raw = text.encode("utf-8", "surrogatepass")
    key = (hashlib.sha256(raw).digest(), namespace, allowed_kinds)
    cached = _parsed.get(key)
    if cached is None:
        try:
            cached = _parse_build_work(text, namespace=namespace, allowed_kinds=allowed_kinds)
        except ManifestError as exc:
            cached = exc
        _parsed.put(key, len(raw), cached)
    if isinstance(cached, ManifestError):
        raise ManifestError(cached.reason, cached.message)
    return list(cached[0]), cached[1]


def _parse_build_work(
    text: str, *, namespace: str, allowed_kinds: frozenset[tuple[str, str]]
) -> BuildWork:
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
