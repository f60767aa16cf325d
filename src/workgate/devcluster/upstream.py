"""Manifests read from pinned upstream releases (in Go's module cache), never copied into this
repository: CRDs rewritten to serve one version, cached per release."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from workgate.devcluster.build import BuildError, Progress, cache_root

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Document = dict[str, Any]


def load_documents(path: Path) -> list[Document]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc]


def dump_documents(documents: Iterable[Document]) -> str:
    return yaml.dump_all(list(documents), Dumper=_Dumper, sort_keys=False)


def serve_one_version(crd: Document, served: str | None = None) -> Document:
    """Keep only `served` (default: the storage version), make it the storage version and
    drop the conversion webhook.

    Upstream serves several versions through a conversion webhook that does not run in the
    embedded control plane, and the API server would fail every request needing it.
    """
    spec = crd["spec"]
    if served is None:
        served = next((v["name"] for v in spec["versions"] if v.get("storage")), None)
        if served is None:
            raise ValueError(f"{crd['metadata']['name']} has no storage version")
    versions = [v for v in spec["versions"] if v["name"] == served]
    if not versions:
        raise ValueError(f"{crd['metadata']['name']} has no version {served}")
    for version in versions:
        version["served"] = True
        version["storage"] = True
    spec["versions"] = versions
    spec["conversion"] = {"strategy": "None"}
    return crd


def cached_crds(
    name: str,
    version: str,
    sources: Callable[[], list[Path]],
    rewrite: Callable[[Document], Document],
    progress: Progress,
) -> list[Path]:
    """The CRDs of `sources()`, rewritten, cached under `<cache>/<name>/<version>/crds`."""
    target = cache_root() / name / version / "crds"
    if not target.is_dir():
        progress(f"preparing {name} {version} CRDs")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="crds-", dir=target.parent) as tmp:
            staging = Path(tmp) / "crds"
            staging.mkdir()
            for path in sources():
                crds = [
                    rewrite(doc)
                    for doc in load_documents(path)
                    if doc.get("kind") == "CustomResourceDefinition"
                ]
                if crds:
                    (staging / path.name).write_text(dump_documents(crds))
            try:
                staging.rename(target)  # atomic; a concurrent caller may have won
            except OSError:
                if not target.is_dir():
                    raise
    files = sorted(target.glob("*.yaml"))
    if not files:
        raise BuildError(f"no {name} CRDs in {target}")
    return files
