"""Build (once) and cache the control-plane binaries from the pinned Go build modules.

The versions live only in `gomod/*/go.mod`; the binaries are cached per version outside the
work tree, so a second call costs a few `stat`s. The add-on controllers (scheduler, kwok,
Tekton, Shipwright) are built the same way, each with its own cache key (`components.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
KUBERNETES_PACKAGES = (
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kubectl",
)
GOMOD_DIR = Path(__file__).parent / "gomod"

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Versions:
    kubernetes: str  # e.g. "v1.36.3"
    etcd: str  # e.g. "v3.6.8"

    @property
    def tag(self) -> str:
        return f"k8s-{self.kubernetes}-etcd-{self.etcd}"


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path

    @classmethod
    def in_dir(cls, bin_dir: Path) -> Binaries:
        return cls(
            bin_dir=bin_dir,
            etcd=bin_dir / "etcd",
            kube_apiserver=bin_dir / "kube-apiserver",
            kube_controller_manager=bin_dir / "kube-controller-manager",
            kubectl=bin_dir / "kubectl",
        )

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kubectl)

    def complete(self) -> bool:
        return all(os.access(path, os.X_OK) for path in self.all)


_REQUIRE_LINE = re.compile(r"^\s*(?:require\s+)?(?P<path>\S+)\s+(?P<version>v\S+)")


def module_version(go_mod: str, module: str) -> str:
    """The version `go_mod` requires of `module` (single-line or block `require`)."""
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
                continue
        elif line.startswith("require ("):
            in_block = True
            continue
        elif not line.startswith("require "):
            continue
        match = _REQUIRE_LINE.match(line)
        if match and match["path"] == module:
            return match["version"]
    raise ValueError(f"go.mod does not require {module}")


def gomod_dir(name: str) -> Path:
    return GOMOD_DIR / name


def pinned_versions(root: Path = GOMOD_DIR) -> Versions:
    return Versions(
        kubernetes=module_version((root / "kubernetes" / "go.mod").read_text(), KUBERNETES_MODULE),
        etcd=module_version((root / "etcd" / "go.mod").read_text(), ETCD_MODULE),
    )


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """`$WORKGATE_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/workgate`."""
    env = os.environ if env is None else env
    if env.get("WORKGATE_CACHE_DIR"):
        return Path(env["WORKGATE_CACHE_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path(env.get("HOME", "~")).expanduser() / ".cache"
    return base / "workgate"


def controlplane_dir(
    versions: Versions | None = None, env: Mapping[str, str] | None = None
) -> Path:
    return cache_root(env) / "controlplane" / (versions or pinned_versions()).tag


def bin_dir(versions: Versions | None = None, env: Mapping[str, str] | None = None) -> Path:
    return controlplane_dir(versions, env) / "bin"


def kubernetes_ldflags(version: str) -> str:
    """Stamp the version `go build` cannot know (it is set by the Kubernetes Makefile)."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+(?:[-+].*)?", version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    pkg = "k8s.io/component-base/version"
    return (
        f"-s -w -X {pkg}.gitVersion={version} -X {pkg}.gitMajor={match[1]}"
        f" -X {pkg}.gitMinor={match[2]} -X {pkg}.gitTreeState=clean"
    )


def etcd_ldflags(version: str) -> str:
    # The source already says the same; stamping keeps go.mod the only place to change.
    return f"-s -w -X go.etcd.io/etcd/api/v3/version.Version={version.removeprefix('v')}"


def ensure_binaries(progress: Progress = stderr_progress) -> Binaries:
    """Return the cached binaries, building them first if this version has none yet."""
    versions = pinned_versions()
    home = controlplane_dir(versions)
    binaries = Binaries.in_dir(home / "bin")
    if binaries.complete():
        return binaries
    home.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another build of the control plane in {home}"
    with file_lock(home / ".build.lock", lambda: progress(waiting)):
        if binaries.complete():  # another process built them while we waited
            return binaries
        for stale in home.glob("build-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        _build(versions, home, progress)
    return binaries


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive `flock` on `path`; the kernel drops it if the holder dies."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(versions: Versions, home: Path, progress: Progress) -> None:
    started = time.monotonic()
    progress(
        f"building Kubernetes {versions.kubernetes} and etcd {versions.etcd} "
        f"(first time only; a cold build takes many minutes) into {home / 'bin'}"
    )
    with tempfile.TemporaryDirectory(prefix="build-", dir=home) as tmp:
        work = Path(tmp)
        out = work / "bin"
        out.mkdir()
        for name in ("etcd", "kubernetes"):
            # A private copy: the package may be installed read-only and go may want to write.
            shutil.copytree(gomod_dir(name), work / name)
        go_build(
            "etcd",
            work / "etcd",
            ["-ldflags", etcd_ldflags(versions.etcd), "-o", str(out / "etcd"), ETCD_MODULE],
            progress,
            env={"CGO_ENABLED": "0"},  # static, like upstream release builds
        )
        go_build(
            "kubernetes",
            work / "kubernetes",
            [
                "-ldflags",
                kubernetes_ldflags(versions.kubernetes),
                "-o",
                f"{out}/",
                *KUBERNETES_PACKAGES,
            ],
            progress,
            env={"CGO_ENABLED": "0"},
        )
        if not Binaries.in_dir(out).complete():
            raise BuildError(f"go build did not produce all binaries in {out}")
        target = home / "bin"
        if target.exists():  # a partial leftover (we hold the lock): replace it
            shutil.rmtree(target)
        out.rename(target)  # atomic: readers see either no bin dir or a complete one
    progress(f"control plane binaries ready in {time.monotonic() - started:.0f}s")


def go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the embedded control plane is built from source and needs Go on PATH")
    return go


def module_source(module: str, version: str) -> Path:
    """A release's source tree in Go's module cache (downloaded and verified by `go`)."""
    with tempfile.TemporaryDirectory() as empty:  # outside any module or workspace
        result = subprocess.run(
            [go_executable(), "mod", "download", "-json", f"{module}@{version}"],
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
        raise BuildError(f"go mod download {module}@{version} failed: {detail}")
    return Path(info["Dir"])


def go_build(
    label: str, module_dir: Path, args: Sequence[str], progress: Progress, env: dict[str, str]
) -> None:
    """`go build` in `module_dir` (its go.mod and go.sum decide every version), with progress."""
    command = [go_executable(), "build", "-v", "-trimpath", "-mod=readonly", "-buildvcs=false"]
    command += args
    started = time.monotonic()
    progress(f"[{label}] go build in {module_dir}")
    proc = subprocess.Popen(
        command,
        cwd=module_dir,
        env={**os.environ, "GOWORK": "off", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: deque[str] = deque(maxlen=40)  # go prints errors last; keep them for the exception
    packages = 0
    last_report = started
    try:
        while True:
            try:
                line = lines.get(timeout=15)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                tail.append(line)
                packages += 1
            now = time.monotonic()
            if (line and packages % 20 == 0) or now - last_report >= 15:
                shown = f", last {line}" if line else ", linking or compiling"
                progress(f"[{label}] {now - started:4.0f}s  {packages} packages{shown}")
                last_report = now
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: don't leave go running
            proc.kill()
            proc.wait()
    if rc != 0:
        raise BuildError(f"[{label}] go build failed (exit {rc}):\n" + "\n".join(tail))
    progress(f"[{label}] built in {time.monotonic() - started:.0f}s ({packages} packages compiled)")
