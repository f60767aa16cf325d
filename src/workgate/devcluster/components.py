"""The add-on controllers of the embedded control plane, built once and cached like the rest.

- kube-scheduler, from the same pinned Kubernetes build module as the API server;
- kwok (simulated nodes that "run" pods through stages), built in its release's own module;
- the Tekton Pipelines controller at the version Shipwright's go.mod names, built in its
  release's own module (its `replace` directives apply there, and nowhere else);
- the Shipwright Build controller: the pinned release's controllers behind our small main
  (`gomod/shipwright/main.go` says why).

Each has its own cache directory, keyed by its version (and, when built from one of our build
modules, by a digest of that module), so none of them invalidates the Kubernetes/etcd build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workgate.devcluster.build import (
    GOMOD_DIR,
    BuildError,
    Progress,
    cache_root,
    file_lock,
    go_build,
    gomod_dir,
    kubernetes_ldflags,
    module_source,
    module_version,
    pinned_versions,
    stderr_progress,
)

SHIPWRIGHT_MODULE = "github.com/shipwright-io/build"
TEKTON_MODULE = "github.com/tektoncd/pipeline"
KWOK_MODULE = "sigs.k8s.io/kwok"
# kwok is a tool, not a library anyone here imports, so its pin lives here.
KWOK_VERSION = "v0.8.0"


def shipwright_version(root: Path = GOMOD_DIR) -> str:
    return module_version((root / "shipwright" / "go.mod").read_text(), SHIPWRIGHT_MODULE)


def tekton_version(root: Path = GOMOD_DIR) -> str:
    """The Tekton release the pinned Shipwright release is built against (its go.mod)."""
    return module_version((root / "shipwright" / "go.mod").read_text(), TEKTON_MODULE)


@dataclass(frozen=True)
class Component:
    """One binary built from Go sources.

    `gomod` names one of our build modules (`gomod/<name>`); otherwise the package is built in
    the root of `module`'s own release, exactly as its authors pin it.
    """

    binary: str
    module: str
    version: str
    package: str
    gomod: str | None = None
    ldflags: str = "-s -w"
    env: dict[str, str] = field(default_factory=lambda: {"CGO_ENABLED": "0"})

    @property
    def key(self) -> str:
        key = f"{self.binary}-{self.version}"
        if self.gomod is not None:
            digest = hashlib.sha256()
            for path in sorted(gomod_dir(self.gomod).iterdir()):
                if path.is_file():
                    digest.update(path.name.encode() + b"\0" + path.read_bytes())
            key += f"-{digest.hexdigest()[:12]}"
        return key

    def home(self) -> Path:
        return cache_root() / "components" / self.key

    def path(self) -> Path:
        return self.home() / "bin" / self.binary

    def built(self) -> bool:
        return os.access(self.path(), os.X_OK)


def components() -> tuple[Component, ...]:
    """The add-ons, in the order they are built and started."""
    kubernetes = pinned_versions().kubernetes
    return (
        Component(
            binary="kube-scheduler",
            module="k8s.io/kubernetes",
            version=kubernetes,
            package="k8s.io/kubernetes/cmd/kube-scheduler",
            gomod="kubernetes",
            ldflags=kubernetes_ldflags(kubernetes),
        ),
        Component(binary="kwok", module=KWOK_MODULE, version=KWOK_VERSION, package="./cmd/kwok"),
        Component(
            binary="tekton-pipelines-controller",
            module=TEKTON_MODULE,
            version=tekton_version(),
            package="./cmd/controller",
        ),
        Component(
            binary="shipwright-build-controller",
            module=SHIPWRIGHT_MODULE,
            version=shipwright_version(),
            package=".",
            gomod="shipwright",
        ),
    )


@dataclass(frozen=True)
class AddonBinaries:
    kube_scheduler: Path
    kwok: Path
    tekton_controller: Path
    shipwright_controller: Path

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.kube_scheduler, self.kwok, self.tekton_controller, self.shipwright_controller)


def ensure_addons(progress: Progress = stderr_progress) -> AddonBinaries:
    """Return the cached add-on binaries, building those this version has none of yet."""
    paths = [ensure_component(component, progress) for component in components()]
    return AddonBinaries(*paths)


def ensure_component(component: Component, progress: Progress = stderr_progress) -> Path:
    if component.built():
        return component.path()
    home = component.home()
    home.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another build of {component.binary} in {home}"
    with file_lock(home / ".build.lock", lambda: progress(waiting)):
        if component.built():  # another process built it while we waited
            return component.path()
        for stale in home.glob("build-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        _build(component, home, progress)
    return component.path()


def _build(component: Component, home: Path, progress: Progress) -> None:
    started = time.monotonic()
    progress(
        f"building {component.binary} ({component.module} {component.version}; "
        f"first time only, a few minutes cold) into {home / 'bin'}"
    )
    with tempfile.TemporaryDirectory(prefix="build-", dir=home) as tmp:
        work = Path(tmp)
        out = work / "bin"
        out.mkdir()
        if component.gomod is not None:
            # A private copy: the package may be installed read-only and go may want to write.
            source = work / component.gomod
            shutil.copytree(gomod_dir(component.gomod), source)
        else:
            source = module_source(component.module, component.version)
        args: Sequence[str] = [
            "-ldflags",
            component.ldflags,
            "-o",
            str(out / component.binary),
            component.package,
        ]
        go_build(component.binary, source, args, progress, env=component.env)
        if not os.access(out / component.binary, os.X_OK):
            raise BuildError(f"go build did not produce {out / component.binary}")
        target = home / "bin"
        if target.exists():  # a partial leftover (we hold the lock): replace it
            shutil.rmtree(target)
        out.rename(target)  # atomic: readers see either no bin dir or a complete one
    progress(f"{component.binary} ready in {time.monotonic() - started:.0f}s")
