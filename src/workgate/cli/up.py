"""`workgate up`: the operator, on the embedded control plane when no cluster is configured.

With KUBECONFIG set, a ~/.kube/config, or inside a pod, the operator runs against that
cluster. Otherwise the local control plane is built (first time only), started with the
CRDs installed (or a running `workgate dev up --detach` one is reused), its export lines
are printed for a second shell, and it is stopped again when the operator exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path

from workgate.devcluster.build import BuildError, ensure_binaries, stderr_progress
from workgate.devcluster.controlplane import LocalControlPlane, default_state_dir
from workgate.devcluster.kubectl import ControlPlaneError
from workgate.devcluster.processes import running_cluster
from workgate.logs import setup_logging
from workgate.operator.config import OperatorConfig
from workgate.operator.main import run_operator


def cluster_configured(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ if env is None else env)
    return bool(
        env.get("KUBECONFIG")
        or env.get("KUBERNETES_SERVICE_HOST")
        or (Path(env.get("HOME", "~")).expanduser() / ".kube" / "config").exists()
    )


def run_operator_until_stopped(
    log_level: str = "info", log_format: str | None = None, *, embedded: bool = False
) -> int:
    """Run until stopped. `embedded`: on a local control plane that outlives this process
    (or is reused), so the fail-closed webhooks are removed on the way out."""
    setup_logging(log_level, log_format)
    config = OperatorConfig.from_env()
    if embedded:
        config = replace(config, webhook_cleanup=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(config))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    if cluster_configured():
        print(
            "using the configured cluster (KUBECONFIG / ~/.kube/config / in-cluster)",
            file=sys.stderr,
        )
        return run_operator_until_stopped(args.log_level)
    state_dir = default_state_dir()
    running = running_cluster(state_dir)
    if running is not None:
        stderr_progress(f"reusing the control plane running from {state_dir}")
        os.environ["KUBECONFIG"] = str(running.kubeconfig)
        print("\n".join(running.export_lines()), flush=True)
        return run_operator_until_stopped(args.log_level, embedded=True)
    try:
        plane = LocalControlPlane(state_dir=state_dir, binaries=ensure_binaries(stderr_progress))
        plane.start()
    except (BuildError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig_path)
        print("# in another shell:", flush=True)
        print("\n".join(plane.export_lines()), flush=True)
        return run_operator_until_stopped(args.log_level, embedded=True)
    finally:
        plane.stop()


def add_up_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run the operator; start the embedded control plane if no cluster is configured",
    )
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.set_defaults(func=cmd_up)
