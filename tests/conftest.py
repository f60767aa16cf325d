"""Session-wide Kubernetes for integration tests.

An existing cluster is used when `WORKGATE_TEST_KUBECONFIG` (or `KUBECONFIG`) points at a
reachable one; otherwise ONE embedded `LocalControlPlane` serves the whole session. Either
way `KUBECONFIG` is set and the built `kubectl` comes first on `PATH` (the machine's own
`kubectl` may be something else entirely, such as a gcloud dispatcher).
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
from pathlib import Path

import pytest

from workgate.devcluster import shipwright
from workgate.devcluster.build import Binaries, ensure_binaries
from workgate.devcluster.controlplane import (
    LocalControlPlane,
    default_crd_files,
    install_crds,
    run_kubectl,
    workgate_crd_files,
)

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


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


def _install_into_existing(binaries: Binaries, kubeconfig: str) -> None:
    path = Path(kubeconfig)
    install_crds(workgate_crd_files(), kubectl=binaries.kubectl, kubeconfig=path)
    present = run_kubectl(
        binaries.kubectl,
        path,
        "get",
        "crd",
        "builds.shipwright.io",
        "buildruns.shipwright.io",
        check=False,
    )
    # Never rewrite a real Shipwright installation's CRDs (ours drop its other versions).
    if present.returncode != 0:
        install_crds(shipwright.crd_files(), kubectl=binaries.kubectl, kubeconfig=path)


@pytest.fixture(scope="session")
def kubeconfig(
    control_plane_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    binaries = control_plane_binaries
    saved = {name: os.environ.get(name) for name in ("KUBECONFIG", "PATH")}
    os.environ["PATH"] = os.pathsep.join([str(binaries.bin_dir), os.environ.get("PATH", "")])
    plane: LocalControlPlane | None = None
    try:
        existing = _existing_cluster(binaries)
        if existing:
            _install_into_existing(binaries, existing)
            path = existing
        else:
            plane = LocalControlPlane(
                "test", state_dir=tmp_path_factory.mktemp("controlplane"), binaries=binaries
            )
            plane.start()
            plane.install_crds(default_crd_files())
            path = str(plane.kubeconfig_path)
        os.environ["KUBECONFIG"] = path
        yield path
    finally:
        if plane is not None:
            plane.stop()
            shutil.rmtree(plane.state_dir, ignore_errors=True)  # etcd preallocates 64 MB
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str, control_plane_binaries: Binaries) -> Kubectl:
    """`kubectl(*args, check=True, input=None, timeout=120)` with the built kubectl."""
    return functools.partial(run_kubectl, control_plane_binaries.kubectl, Path(kubeconfig))


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
