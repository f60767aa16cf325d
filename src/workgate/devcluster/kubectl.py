"""kubectl against the embedded control plane (or any kubeconfig): CRDs and manifests.

Workgate's own CRDs are generated from the API models, which every installation has (a wheel
as much as a checkout), so the plane never depends on where `crds/` happens to be.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from workgate.api import crdgen
from workgate.devcluster import shipwright
from workgate.devcluster.build import Progress, cache_root, stderr_progress


class ControlPlaneError(RuntimeError):
    pass


def workgate_crd_files(directory: Path | None = None) -> list[Path]:
    """Workgate's CRDs as generated from the models (`workgate crds --check` keeps `crds/`
    equal to the same text), written under `directory`: by default a cache directory named
    after their content, so checkouts with different models never overwrite each other's."""
    rendered = crdgen.render_all()
    if not rendered:
        raise ControlPlaneError("the API models generate no CRDs")
    if directory is None:
        digest = hashlib.sha256()
        for name, text in sorted(rendered.items()):
            digest.update(f"{name}\0{text}\0".encode())
        directory = cache_root() / "workgate-crds" / digest.hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: a concurrent session reads old or new, never half
        paths.append(path)
    return paths


# How the plane applies what it installs: server-side, as its own field manager.
SERVER_SIDE_APPLY = ("apply", "--server-side", "--force-conflicts", "--field-manager=workgate-dev")


def default_crd_files(progress: Progress = stderr_progress) -> list[Path]:
    """The CRDs every embedded plane serves: Shipwright's (v1beta1 only) and workgate's."""
    return shipwright.crd_files(progress=progress) + workgate_crd_files()


def run_kubectl(
    kubectl: Path,
    kubeconfig_path: Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kubectl), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig_path)},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ControlPlaneError(
            f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def install_crds(
    paths: Iterable[Path], *, kubectl: Path, kubeconfig: Path, timeout: float = 60
) -> None:
    """Server-side apply CRD files and wait until the API server serves them."""
    files: list[str] = []
    for path in paths:
        files += ["-f", str(path)]
    if not files:
        return
    run_kubectl(
        kubectl,
        kubeconfig,
        *SERVER_SIDE_APPLY,
        *files,
    )
    run_kubectl(
        kubectl,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        f"--timeout={timeout:.0f}s",
        *files,
        timeout=timeout + 30,
    )


def apply_manifests(
    documents: Sequence[dict[str, Any]], *, kubectl: Path, kubeconfig: Path
) -> None:
    """Server-side apply objects (namespaces first, as `kubectl apply` takes them in order)."""
    if not documents:
        return
    run_kubectl(
        kubectl,
        kubeconfig,
        *SERVER_SIDE_APPLY,
        "-f",
        "-",
        input=yaml.safe_dump_all(documents, sort_keys=False),
    )
