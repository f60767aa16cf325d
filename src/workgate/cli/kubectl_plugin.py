"""`kubectl workgate`: the reviewer's side of a waitpoint.

    kubectl workgate pending WORKORDER [-n NS]      list the WorkOrder's waitpoints
    kubectl workgate signal WAITPOINT NAME [--payload TEXT] [-n NS]

`signal` reads the waitpoint's token Secret with the reviewer's own credentials (so RBAC
decides who may approve), proves possession of the token with an HMAC over the signal
and the reviewer's identity, and creates the Signal. The token itself is never printed,
logged or sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import sys
import time

from workgate.agent.client import whoami
from workgate.api.common import API_VERSION, LABEL_WORKORDER
from workgate.core.naming import label_value
from workgate.core.signals import signal_proof
from workgate.k8s.api import SECRETS, SIGNALS, WAITPOINTS, ApiError, Body, KubeApi
from workgate.k8s.waitpoints import ANNOTATION_SENDER, TOKEN_KEY


def build_signal(
    *, namespace: str, waitpoint: str, name: str, payload: str, sender: str, token: str
) -> Body:
    nonce = secrets.token_urlsafe(24)
    proof = signal_proof(
        token,
        namespace=namespace,
        waitpoint=waitpoint,
        signal_name=name,
        nonce=nonce,
        payload=payload,
        sender=sender,
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Signal",
        "metadata": {
            "generateName": f"{waitpoint[:200]}-{name.lower()[:40]}-",
            "namespace": namespace,
            "annotations": {ANNOTATION_SENDER: sender},
        },
        "spec": {
            "waitpointName": waitpoint,
            "signalName": name,
            "payload": payload,
            "nonce": nonce,
            "proof": proof,
        },
    }


async def send_signal(
    api: KubeApi, namespace: str, waitpoint: str, name: str, payload: str = ""
) -> Body:
    """Create a Signal for `waitpoint`; returns the created object."""
    wp = await api.get(WAITPOINTS.path(namespace, waitpoint))
    secret_name = (wp.get("status") or {}).get("tokenSecretName")
    if not secret_name:
        raise RuntimeError(f"waitpoint {waitpoint} has no token yet; try again in a moment")
    secret = await api.get(SECRETS.path(namespace, secret_name))
    token = base64.b64decode(secret["data"][TOKEN_KEY]).decode()
    body = build_signal(
        namespace=namespace,
        waitpoint=waitpoint,
        name=name,
        payload=payload,
        sender=await whoami(api),
        token=token,
    )
    return await api.create(SIGNALS.path(namespace), body)


async def wait_judged(api: KubeApi, namespace: str, name: str, seconds: float) -> Body:
    deadline = time.monotonic() + seconds
    while True:
        signal = await api.get(SIGNALS.path(namespace, name))
        if (signal.get("status") or {}).get("phase") or time.monotonic() > deadline:
            return signal
        await asyncio.sleep(0.1)


async def _signal(args: argparse.Namespace) -> int:
    async with KubeApi() as api:
        namespace = args.namespace or api.default_namespace
        try:
            created = await send_signal(api, namespace, args.waitpoint, args.name, args.payload)
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        name = created["metadata"]["name"]
        print(f"signal.workgate.io/{name} created")
        if args.no_wait:
            return 0
        judged = await wait_judged(api, namespace, name, args.timeout)
        status = judged.get("status") or {}
        phase = status.get("phase") or "Pending"
        print(f"signal.workgate.io/{name} {phase}: {status.get('message', 'not judged yet')}")
        return 0 if phase in ("Accepted", "Pending") else 1


async def _pending(args: argparse.Namespace) -> int:
    async with KubeApi() as api:
        namespace = args.namespace or api.default_namespace
        listing = await api.get(
            WAITPOINTS.path(namespace),
            params={"labelSelector": f"{LABEL_WORKORDER}={label_value(args.workorder)}"},
        )
        rows = [("KEY", "WAITPOINT", "STATE", "REQUIRED", "RECEIVED", "EXPIRES")]
        for wp in listing.get("items", []):
            st = wp.get("status") or {}
            if args.all or st.get("state") in ("pending", "active", None):
                rows.append(
                    (
                        wp["spec"]["key"],
                        wp["metadata"]["name"],
                        st.get("state") or "-",
                        ",".join(wp["spec"].get("requiredSignalNames") or []) or "(any)",
                        str(st.get("receivedCount", 0)),
                        st.get("expiresAt") or "-",
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "   ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl workgate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--namespace", default=None)
    ns = argparse.ArgumentParser(add_help=False)
    ns.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    pending = sub.add_parser(
        "pending", parents=[ns], help="list the pending and active waitpoints of a WorkOrder"
    )
    pending.add_argument("workorder")
    pending.add_argument("--all", action="store_true", help="include closed waitpoints")
    pending.set_defaults(func=_pending)
    signal = sub.add_parser("signal", parents=[ns], help="deliver a signal to a waitpoint")
    signal.add_argument("waitpoint")
    signal.add_argument("name", help="signal name, e.g. approve")
    signal.add_argument("--payload", default="", help="a small payload (at most 4 KiB)")
    signal.add_argument("--no-wait", action="store_true", help="do not wait for the verdict")
    signal.add_argument("--timeout", type=float, default=10.0)
    signal.set_defaults(func=_signal)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = asyncio.run(args.func(args))
    return result


if __name__ == "__main__":
    sys.exit(main())
