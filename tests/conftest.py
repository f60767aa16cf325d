"""Session-wide Kubernetes for integration tests.

An existing cluster is used when `WORKGATE_TEST_KUBECONFIG` (or `KUBECONFIG`) points at a
reachable one; otherwise ONE embedded `LocalControlPlane` serves the whole session, with the
scheduler, a kwok node, Tekton and Shipwright (`WORKGATE_DEV_BARE=1`: without them). Either way
`KUBECONFIG` is set and the built `kubectl` comes first on `PATH` (the machine's own `kubectl`
may be something else entirely, such as a gcloud dispatcher).

The embedded Shipwright controller watches only the namespaces handed out by `build_namespace`:
elsewhere tests play the controller themselves (`finish_build_run`), and a real controller
racing them would make their timing meaningless.

On an existing cluster the session installs a CRD only where the cluster has none, deletes
only what it installed, and never overwrites what is there.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from workgate.devcluster import shipwright
from workgate.devcluster.build import Binaries, ensure_binaries
from workgate.devcluster.controlplane import LocalControlPlane, bare_from_env
from workgate.devcluster.kubectl import install_crds, run_kubectl, workgate_crd_files

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
# Namespaces the embedded Shipwright controller watches: one per real-build test.
BUILD_NAMESPACES = 12
KWOK_NODE_LABEL = "type=kwok"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    embedded: bool  # the session's own LocalControlPlane (its versions are the pinned ones)
    bare: bool  # embedded without scheduler, kwok, Tekton and Shipwright
    build_namespaces: tuple[str, ...]


@pytest.fixture(scope="session")
def control_plane_binaries() -> Binaries:
    return ensure_binaries()


def _reachable(binaries: Binaries, kubeconfig: str) -> bool:
    result = run_kubectl(
        binaries.kubectl,
        Path(kubeconfig),
        "--request-timeout=5s",
        "get",
        "--raw=/readyz",
        check=False,
        timeout=20,
    )
    return result.returncode == 0


def _existing_cluster(binaries: Binaries) -> str | None:
    explicit = os.environ.get("WORKGATE_TEST_KUBECONFIG")
    if explicit:
        if not _reachable(binaries, explicit):
            # Asked for by name: silently testing something else would mislead.
            raise RuntimeError(f"WORKGATE_TEST_KUBECONFIG={explicit} is not reachable")
        return explicit
    ambient = os.environ.get("KUBECONFIG")
    if ambient:
        if _reachable(binaries, ambient):
            return ambient
        warnings.warn(
            f"KUBECONFIG={ambient} is not reachable; starting the embedded control plane",
            stacklevel=1,
        )
    return None


def _install_missing_crds(binaries: Binaries, kubeconfig: str) -> list[str]:
    """Install workgate's and Shipwright's CRDs where the cluster lacks them; return the names
    of those installed. Present ones are the cluster's: never rewritten (ours would drop
    Shipwright's other versions, or another workgate version's schema)."""
    path = Path(kubeconfig)
    installed = []
    for files in (workgate_crd_files(), shipwright.crd_files()):
        missing = []
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                name = doc["metadata"]["name"]
                got = run_kubectl(binaries.kubectl, path, "get", "crd", name, check=False)
                if got.returncode != 0:
                    missing.append(file)
                    installed.append(name)
        install_crds(sorted(set(missing)), kubectl=binaries.kubectl, kubeconfig=path)
    return installed


@pytest.fixture(scope="session")
def cluster(
    control_plane_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    binaries = control_plane_binaries
    saved = {name: os.environ.get(name) for name in ("KUBECONFIG", "PATH")}
    os.environ["PATH"] = os.pathsep.join([str(binaries.bin_dir), os.environ.get("PATH", "")])
    plane: LocalControlPlane | None = None
    installed: list[str] = []
    token = secrets.token_hex(3)
    build_namespaces = tuple(f"t-build-{token}-{i}" for i in range(BUILD_NAMESPACES))
    existing: str | None = None
    try:
        existing = _existing_cluster(binaries)
        if existing:
            installed = _install_missing_crds(binaries, existing)
            found = Cluster(existing, False, False, build_namespaces)
        else:
            plane = LocalControlPlane(
                "test",
                state_dir=tmp_path_factory.mktemp("controlplane"),
                binaries=binaries,
                bare=bare_from_env(),
                shipwright_namespaces=build_namespaces,
            )
            plane.start()
            found = Cluster(str(plane.kubeconfig_path), True, plane.bare, build_namespaces)
        os.environ["KUBECONFIG"] = found.kubeconfig
        yield found
    finally:
        if plane is not None:
            plane.stop()
            shutil.rmtree(plane.state_dir, ignore_errors=True)  # etcd preallocates 64 MB
        if existing and installed:
            run_kubectl(
                binaries.kubectl, Path(existing), "delete", "crd", "--wait=false", *installed,
                check=False,
            )  # fmt: skip
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> str:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str, control_plane_binaries: Binaries) -> Kubectl:
    """`kubectl(*args, check=True, input=None, timeout=120)` with the built kubectl."""
    return functools.partial(run_kubectl, control_plane_binaries.kubectl, Path(kubeconfig))


def _create_namespace(kubectl: Kubectl, name: str) -> Iterator[str]:
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    yield from _create_namespace(kubectl, f"t-{base}-{secrets.token_hex(3)}")


@pytest.fixture(scope="session")
def real_builds(cluster: Cluster, kubectl: Kubectl) -> None:
    """The scheduler, a kwok node, Tekton and Shipwright are there (fails loudly if not)."""
    if cluster.bare:
        pytest.fail(
            "this test needs the real Shipwright, Tekton, scheduler and kwok node, which "
            "WORKGATE_DEV_BARE=1 leaves out; unset it, or deselect with -m 'not real_build'"
        )
    if cluster.embedded:
        return
    strategy = kubectl("get", "clusterbuildstrategy", shipwright.SAMPLE_STRATEGY, check=False)
    nodes = kubectl("get", "nodes", "-o", "name", f"-l={KWOK_NODE_LABEL}", check=False)
    if strategy.returncode != 0 or not nodes.stdout.strip():
        pytest.fail(
            "real-build tests need the Shipwright and Tekton controllers, the ClusterBuildStrategy "
            f"{shipwright.SAMPLE_STRATEGY} and a kwok node labelled {KWOK_NODE_LABEL} running "
            "the stages of workgate.devcluster.kwok; deselect them with -m 'not real_build'"
        )


_handed_out: set[str] = set()


@pytest.fixture
def build_namespace(cluster: Cluster, kubectl: Kubectl, real_builds: None) -> Iterator[str]:
    """A fresh namespace where the real Shipwright controller runs builds: on the embedded
    plane, one it watches; on an existing cluster, any (its Shipwright watches all)."""
    free = [n for n in cluster.build_namespaces if n not in _handed_out]
    if not free:
        pytest.fail(f"all {BUILD_NAMESPACES} build namespaces are used: raise BUILD_NAMESPACES")
    _handed_out.add(free[0])
    yield from _create_namespace(kubectl, free[0])
