"""Shipwright Build at the pinned release (`gomod/shipwright/go.mod`): its CRDs served as
`v1beta1` only, the controller's environment from the release's Deployment, and the sample
ClusterBuildStrategy the embedded plane installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workgate.devcluster.build import Progress, module_source, stderr_progress
from workgate.devcluster.components import SHIPWRIGHT_MODULE, shipwright_version
from workgate.devcluster.upstream import Document, cached_crds, load_documents, serve_one_version

MODULE = SHIPWRIGHT_MODULE
VERSION = shipwright_version()
SERVED_VERSION = "v1beta1"
# The sample strategy the embedded plane installs (examples/ builds with it).
SAMPLE_STRATEGY = "buildah-shipwright-managed-push"
SAMPLE_STRATEGY_FILE = (
    "samples/v1beta1/buildstrategy/buildah/buildstrategy_buildah_shipwright_managed_push_cr.yaml"
)


def module_dir(version: str = VERSION) -> Path:
    return module_source(MODULE, version)


def rewrite_crd(crd: dict[str, Any], served: str = SERVED_VERSION) -> dict[str, Any]:
    """Keep only `served`, make it the storage version and drop the conversion webhook."""
    return serve_one_version(crd, served)


def crd_files(version: str = VERSION, progress: Progress = stderr_progress) -> list[Path]:
    """The rewritten CRD files, cached under the workgate cache dir."""
    return cached_crds(
        "shipwright",
        version,
        lambda: sorted((module_dir(version) / "deploy" / "crds").glob("*.yaml")),
        rewrite_crd,
        progress,
    )


def sample_strategies(version: str = VERSION) -> list[Document]:
    docs = load_documents(module_dir(version) / SAMPLE_STRATEGY_FILE)
    names = [d["metadata"]["name"] for d in docs if d.get("kind") == "ClusterBuildStrategy"]
    if names != [SAMPLE_STRATEGY]:
        raise ValueError(f"{SAMPLE_STRATEGY_FILE} defines {names}, not {SAMPLE_STRATEGY}")
    return docs


def controller_env(version: str = VERSION) -> dict[str, str]:
    """The literal environment of the release's controller Deployment.

    Its `ko://` image references name images the simulated nodes never pull. The entries
    taken from the pod (namespace, pod name) only serve leader election, which a single
    embedded instance does not do.
    """
    path = module_dir(version) / "deploy" / "500-controller.yaml"
    for doc in load_documents(path):
        if doc.get("kind") != "Deployment":
            continue
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    raise ValueError(f"no Deployment in {path}")
