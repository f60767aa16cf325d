"""`workgate dev`: the embedded local control plane for trying workgate out.

Export lines go to stdout (so `eval "$(workgate dev env)"` works); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from workgate.devcluster import shipwright, tekton
from workgate.devcluster.build import BuildError, ensure_binaries, stderr_progress
from workgate.devcluster.components import ensure_addons
from workgate.devcluster.controlplane import (
    BARE_ENV,
    DEFAULT_NAME,
    LocalControlPlane,
    bare_from_env,
    default_state_dir,
)
from workgate.devcluster.kubectl import ControlPlaneError, default_crd_files
from workgate.devcluster.processes import pidfile_path, running_cluster, stop_detached


def add_dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="a local Kubernetes control plane for development")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default: dev)")
        parser.add_argument(
            "--state-dir",
            default=None,
            help="where certificates, etcd data, logs and the kubeconfig live "
            "(default: <cache dir>/clusters/<name>)",
        )

    def bare(parser: argparse.ArgumentParser, what: str) -> None:
        parser.add_argument(
            "--bare",
            action="store_true",
            default=bare_from_env(),
            help=f"{what} the control plane alone: no scheduler, kwok node, Tekton or "
            f"Shipwright controller (default when {BARE_ENV}=1)",
        )

    build = dev_sub.add_parser(
        "build", help="build (first time only) and cache everything `up` runs, with progress"
    )
    bare(build, "build")
    build.set_defaults(func=_cmd_build)

    up = dev_sub.add_parser(
        "up", help="build (first time only) and start it, with the CRDs installed"
    )
    common(up)
    up.add_argument(
        "--detach", action="store_true", help="leave it running; stop with `workgate dev down`"
    )
    bare(up, "start")
    up.set_defaults(func=_cmd_up)

    down = dev_sub.add_parser("down", help="stop a running (e.g. detached) control plane")
    common(down)
    down.set_defaults(func=_cmd_down)

    env = dev_sub.add_parser("env", help="print the export lines for a running control plane")
    common(env)
    env.set_defaults(func=_cmd_env)


def _state_dir(args: argparse.Namespace) -> Path:
    return (
        Path(args.state_dir).expanduser().resolve()
        if args.state_dir
        else default_state_dir(args.name)
    )


class _Stop(Exception):
    """SIGINT/SIGTERM/SIGHUP: stop the control plane, then exit."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _cmd_build(args: argparse.Namespace) -> int:
    """Everything a plane needs, so that no test or `up` pays for a cold build unannounced."""
    started = time.monotonic()
    try:
        ensure_binaries(stderr_progress)
        default_crd_files(stderr_progress)
        if not args.bare:
            ensure_addons(stderr_progress)
            tekton.crd_files(progress=stderr_progress)
            shipwright.sample_strategies()
    except (BuildError, ControlPlaneError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    what = "bare control plane" if args.bare else "control plane and add-ons"
    stderr_progress(f"{what} built and cached ({time.monotonic() - started:.1f}s)")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    running = running_cluster(state_dir)
    if running is not None:
        print(f"already running from {state_dir}", file=sys.stderr)
        print("\n".join(running.export_lines()))
        return 0
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and we want Ctrl-C/kill
    # -INT to stop the cluster whichever way we were started.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    started = time.monotonic()
    plane: LocalControlPlane | None = None
    keep = False
    try:
        binaries = ensure_binaries(stderr_progress)
        plane = LocalControlPlane(
            args.name,
            state_dir=state_dir,
            binaries=binaries,
            die_with_parent=not args.detach,
            bare=args.bare,
        )
        plane.start()
        stderr_progress(f"{time.monotonic() - started:.1f}s in all")
        print("\n".join(plane.export_lines()), flush=True)
        if args.detach:
            keep = True
            stderr_progress(f"running detached; logs in {plane.log_dir}; stop: workgate dev down")
            return 0
        stderr_progress("running; Ctrl-C to stop")
        return _watch(plane)
    except (KeyboardInterrupt, _Stop):
        stderr_progress("stopping")
        return 0
    except (BuildError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if plane is not None and not keep:
            plane.stop()


def _watch(plane: LocalControlPlane) -> int:
    pidfile = pidfile_path(plane.state_dir)
    while True:
        time.sleep(0.5)
        exited = plane.exited()
        if exited:
            time.sleep(1)  # `dev down` stops the processes first, then removes the pidfile
        if not pidfile.exists():
            stderr_progress("stopped by `workgate dev down`")
            return 0
        if exited:
            print(f"error: {', '.join(exited)} exited; logs in {plane.log_dir}", file=sys.stderr)
            return 1


def _cmd_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    stopped = stop_detached(state_dir)
    if stopped:
        stderr_progress(f"stopped {', '.join(stopped)} ({state_dir})")
    else:
        stderr_progress(f"no control plane running from {state_dir}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    running = running_cluster(state_dir)
    if running is None or not running.ready():
        print(
            f"no control plane running from {state_dir}; start one with `workgate dev up`",
            file=sys.stderr,
        )
        return 1
    print("\n".join(running.export_lines()))
    return 0
