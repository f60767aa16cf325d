"""Tekton Pipelines at the version the pinned Shipwright release names: its CRDs (storage
version only, no conversion webhook), its namespace and ConfigMaps, and the controller's
command line and environment, all read from the release's `config/`."""

from __future__ import annotations

from pathlib import Path

from workgate.devcluster.build import Progress, module_source, stderr_progress
from workgate.devcluster.components import TEKTON_MODULE, tekton_version
from workgate.devcluster.upstream import Document, cached_crds, load_documents, serve_one_version

VERSION = tekton_version()
NAMESPACE = "tekton-pipelines"
# Paths inside the release's container image; nothing on this machine.
_CONTAINER_ONLY_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def module_dir(version: str = VERSION) -> Path:
    return module_source(TEKTON_MODULE, version)


def crd_files(version: str = VERSION, progress: Progress = stderr_progress) -> list[Path]:
    return cached_crds(
        "tekton",
        version,
        lambda: sorted((module_dir(version) / "config" / "300-crds").glob("*.yaml")),
        serve_one_version,
        progress,
    )


def config_manifests(version: str = VERSION) -> list[Document]:
    """The `tekton-pipelines` namespace and the controller's ConfigMaps."""
    config = module_dir(version) / "config"
    docs = load_documents(config / "100-namespace" / "100-namespace.yaml")
    for path in sorted(config.glob("config-*.yaml")):
        docs += [d for d in load_documents(path) if d.get("kind") == "ConfigMap"]
    if [d["metadata"]["name"] for d in docs[:1]] != [NAMESPACE]:
        raise ValueError(f"{config} does not start with the {NAMESPACE} namespace")
    return docs


def _controller_container(version: str) -> dict[str, object]:
    for doc in load_documents(module_dir(version) / "config" / "controller.yaml"):
        if doc.get("kind") == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            return dict(container)
    raise ValueError("no controller Deployment in Tekton's config/controller.yaml")


def controller_args(version: str = VERSION) -> list[str]:
    """The release's flags (image references the simulated nodes never pull)."""
    args = _controller_container(version).get("args") or []
    assert isinstance(args, list)
    return [str(a) for a in args]


def controller_env(version: str = VERSION) -> dict[str, str]:
    """The release's literal environment, and SYSTEM_NAMESPACE (a fieldRef upstream)."""
    env = _controller_container(version).get("env") or []
    assert isinstance(env, list)
    values = {
        str(e["name"]): str(e["value"])
        for e in env
        if "value" in e and e["name"] not in _CONTAINER_ONLY_ENV
    }
    return {**values, "SYSTEM_NAMESPACE": NAMESPACE}
