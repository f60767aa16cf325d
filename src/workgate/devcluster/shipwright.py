"""Shipwright's CRDs at a pinned release, rewritten to serve only `v1beta1`.

Upstream serves v1alpha1 and v1beta1 through a conversion webhook that does not run in the
embedded control plane, and the API server would fail every request needing a conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from workgate.devcluster.build import BuildError, Progress, cache_root, stderr_progress

MODULE = "github.com/shipwright-io/build"
VERSION = "v0.17.0"
SERVED_VERSION = "v1beta1"

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def module_dir(version: str = VERSION) -> Path:
    """The release's source tree in Go's module cache (downloaded and verified by `go`)."""
    go = shutil.which("go")
    if go is None:
        raise BuildError("fetching the Shipwright CRDs needs Go on PATH")
    with tempfile.TemporaryDirectory() as empty:  # outside any module or workspace
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{MODULE}@{version}"],
            cwd=empty,
            env={**os.environ, "GOWORK": "off"},
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        info: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Dir" not in info:
        detail = info.get("Error") or result.stderr.strip() or result.stdout.strip()
        raise BuildError(f"go mod download {MODULE}@{version} failed: {detail}")
    return Path(info["Dir"])


def rewrite_crd(crd: dict[str, Any], served: str = SERVED_VERSION) -> dict[str, Any]:
    """Keep only `served`, make it the storage version and drop the conversion webhook."""
    spec = crd["spec"]
    versions = [v for v in spec["versions"] if v["name"] == served]
    if not versions:
        raise ValueError(f"{crd['metadata']['name']} has no version {served}")
    for version in versions:
        version["served"] = True
        version["storage"] = True
    spec["versions"] = versions
    spec["conversion"] = {"strategy": "None"}
    return crd


def crd_files(version: str = VERSION, progress: Progress = stderr_progress) -> list[Path]:
    """The rewritten CRD files, cached under the workgate cache dir."""
    target = cache_root() / "shipwright" / version / "crds"
    if not target.is_dir():
        progress(f"preparing Shipwright {version} CRDs (served as {SERVED_VERSION} only)")
        source = module_dir(version) / "deploy" / "crds"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="crds-", dir=target.parent) as tmp:
            staging = Path(tmp) / "crds"
            staging.mkdir()
            for path in sorted(source.glob("*.yaml")):
                docs = [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d]
                out = [rewrite_crd(d) for d in docs if d.get("kind") == "CustomResourceDefinition"]
                (staging / path.name).write_text(
                    yaml.dump_all(out, Dumper=_Dumper, sort_keys=False)
                )
            try:
                staging.rename(target)  # atomic; a concurrent caller may have won
            except OSError:
                if not target.is_dir():
                    raise
    files = sorted(target.glob("*.yaml"))
    if not files:
        raise BuildError(f"no Shipwright CRDs in {target}")
    return files
