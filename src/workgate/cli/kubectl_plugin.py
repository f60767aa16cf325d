"""`kubectl workgate`: the reviewer's side of a waitpoint, and the work controls.

    kubectl workgate pending [WORKORDER] [-n NS | -A] [--all]   what waits, for whom
    kubectl workgate approve WAITPOINT [--signal NAME] [--payload TEXT] [-n NS]
    kubectl workgate reject WAITPOINT [--payload TEXT] [-n NS]
    kubectl workgate signal WAITPOINT NAME [--payload TEXT] [-n NS]
    kubectl workgate cancel|suspend|resume|retry WORKORDER [-n NS] [--timeout S]

approve/reject/signal read the waitpoint's token Secret with the reviewer's own
credentials, prove possession of the token with an HMAC over the signal and the
reviewer's identity (never sending or printing the token), record the reviewer's user
name and groups on the Signal (admission checks they are the reviewer's own), and wait
for the operator's verdict. Deciding also needs the RBAC verb `approve` on the waitpoint
(`kubectl auth can-i approve waitpoints.workgate.io/NAME`).

Exit status: 0 accepted; 1 refused (by admission or by the operator) or any error;
2 not judged within --timeout (the Signal exists and may still be accepted).

The controls (workgate.cli.kubectl_controls): cancel sets spec.cancel and waits for
CANCELLED; suspend/resume set spec.suspend; retry reruns a FAILED or CANCELLED WorkOrder
(annotation workgate.io/rerun). Exit status 0 done, 1 refused or error, 2 not done
within --timeout (the request stands).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import sys
import time
from typing import Any

from workgate.agent.client import whoami
from workgate.api.common import API_VERSION, LABEL_WORKORDER
from workgate.api.waitpoint import DEFAULT_REJECT_SIGNAL
from workgate.cli.kubectl_controls import EXIT_PENDING, EXIT_REFUSED, add_control_parsers, with_api
from workgate.core.approvals import format_groups
from workgate.core.naming import label_value, token_secret_name
from workgate.core.signals import signal_proof
from workgate.k8s.api import SECRETS, SIGNALS, WAITPOINTS, ApiError, Body, KubeApi
from workgate.k8s.owners import controlled_by
from workgate.k8s.waitpoints import ANNOTATION_SENDER, ANNOTATION_SENDER_GROUPS, TOKEN_KEY

__all__ = ["build_signal", "identity", "main", "prepare_signal", "send_signal", "whoami"]
DEFAULT_APPROVE_SIGNAL = "approve"


def build_signal(
    *,
    namespace: str,
    waitpoint: str,
    name: str,
    payload: str,
    sender: str,
    token: str,
    groups: tuple[str, ...] | None = None,
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
    annotations = {ANNOTATION_SENDER: sender}
    if groups is not None:
        annotations[ANNOTATION_SENDER_GROUPS] = format_groups(groups)
    return {
        "apiVersion": API_VERSION,
        "kind": "Signal",
        "metadata": {
            "generateName": f"{waitpoint[:200]}-{name.lower()[:40]}-",
            "namespace": namespace,
            "annotations": annotations,
        },
        "spec": {
            "waitpointName": waitpoint,
            "signalName": name,
            "payload": payload,
            "nonce": nonce,
            "proof": proof,
        },
    }


async def identity(api: KubeApi) -> tuple[str, tuple[str, ...]]:
    """Who the API server says we are: user name and groups."""
    review = await api.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    info = review["status"]["userInfo"]
    return str(info["username"]), tuple(info.get("groups") or ())


async def _get_or_none(api: KubeApi, path: str) -> Body | None:
    try:
        return await api.get(path)
    except ApiError as exc:
        if not exc.not_found:
            raise
        return None


async def read_token(api: KubeApi, namespace: str, waitpoint: str, wp: Body | None = None) -> str:
    """The waitpoint's token, from its Secret, which must be controlled by this very
    waitpoint (its uid: not a namesake's, nor an object that only names it). The operator
    names that Secret after the waitpoint, so both are read at once (`wp`, when the
    caller has read it anyway, names it from its status)."""
    secret: Body | None = None
    if wp is not None:
        found = wp
    else:
        found, secret = await asyncio.gather(  # no such waitpoint: its 404
            api.get(WAITPOINTS.path(namespace, waitpoint)),
            _get_or_none(api, SECRETS.path(namespace, token_secret_name(waitpoint))),
        )
    secret_name = (found.get("status") or {}).get("tokenSecretName")
    if not secret_name:
        raise RuntimeError(f"waitpoint {waitpoint} has no token yet; try again in a moment")
    if secret is None or secret["metadata"]["name"] != secret_name:
        secret = await _get_or_none(api, SECRETS.path(namespace, secret_name))
    if secret is None:
        raise RuntimeError(f"waitpoint {waitpoint} has no token yet; try again in a moment")
    if not controlled_by(secret, str(found["metadata"].get("uid", ""))):
        raise RuntimeError(
            f"Secret {secret_name} is not waitpoint {waitpoint}'s token Secret (its controller "
            "is not that waitpoint); ask whoever runs the cluster"
        )
    try:
        token = base64.b64decode(str((secret.get("data") or {})[TOKEN_KEY]), validate=True)
        return token.decode()
    except (KeyError, ValueError):  # no key, not base64, not text (UnicodeDecodeError)
        raise RuntimeError(
            f"Secret {secret_name} holds no readable token; ask whoever runs the cluster"
        ) from None


async def prepare_signal(
    api: KubeApi,
    namespace: str,
    waitpoint: str,
    name: str,
    payload: str = "",
    wp: Body | None = None,
) -> Body:
    """The Signal for `waitpoint`, ready to create: its token Secret read (`wp`: the
    waitpoint, when the caller has read it), the reviewer's identity asked, the proof
    computed (the token itself stays here). Both reads at once."""
    token, (user, groups) = await asyncio.gather(
        read_token(api, namespace, waitpoint, wp), identity(api)
    )
    return build_signal(
        namespace=namespace,
        waitpoint=waitpoint,
        name=name,
        payload=payload,
        sender=user,
        groups=groups,
        token=token,
    )


async def send_signal(
    api: KubeApi,
    namespace: str,
    waitpoint: str,
    name: str,
    payload: str = "",
    wp: Body | None = None,
) -> Body:
    """Create a Signal for `waitpoint`; returns the created object."""
    body = await prepare_signal(api, namespace, waitpoint, name, payload, wp)
    return await api.create(SIGNALS.path(namespace), body)


async def wait_judged(api: KubeApi, namespace: str, name: str, seconds: float) -> Body:
    deadline = time.monotonic() + seconds
    while True:
        signal = await api.get(SIGNALS.path(namespace, name))
        if (signal.get("status") or {}).get("phase") or time.monotonic() > deadline:
            return signal
        await asyncio.sleep(0.1)


def approve_signal_name(wp: Body, chosen: str | None) -> str:
    """--signal, else the waitpoint's only required name, else `approve` for a wildcard."""
    if chosen:
        return chosen
    required = wp["spec"].get("requiredSignalNames") or []
    if len(required) > 1:
        raise RuntimeError(
            f"waitpoint {wp['metadata']['name']} waits for {', '.join(required)}: "
            "choose one with --signal"
        )
    return str(required[0]) if required else DEFAULT_APPROVE_SIGNAL


async def _deliver(args: argparse.Namespace, api: KubeApi, namespace: str) -> int:
    wp = None
    if args.command == "signal":
        name = args.name
    else:
        wp = await api.get(WAITPOINTS.path(namespace, args.waitpoint))
        if args.command == "reject":
            name = wp["spec"].get("rejectSignalName") or DEFAULT_REJECT_SIGNAL
        else:
            name = approve_signal_name(wp, args.signal)
    created = await send_signal(api, namespace, args.waitpoint, name, args.payload, wp)
    signal = created["metadata"]["name"]
    print(f"signal.workgate.io/{signal} created ({name})")
    if args.no_wait:
        return 0
    status = (await wait_judged(api, namespace, signal, args.timeout)).get("status") or {}
    phase = status.get("phase")
    if not phase:
        print(f"signal.workgate.io/{signal} not judged within {args.timeout:g}s", file=sys.stderr)
        return EXIT_PENDING
    line = f"signal.workgate.io/{signal} {phase}: {status.get('reason')}: {status.get('message')}"
    if phase == "Accepted":
        print(line)
        return 0
    print(line, file=sys.stderr)
    return EXIT_REFUSED


async def _signal(args: argparse.Namespace) -> int:
    return await with_api(args, _deliver)


def approved_by(status: dict[str, Any]) -> str:
    tallies = status.get("approvals") or []
    parts = [
        f"{t['name']}: {', '.join(t.get('approvedBy') or [])}"
        for t in tallies
        if t.get("approvedBy")
    ]
    return "; ".join(parts) or "-"


def pending_rows(items: list[Body], *, namespaces: bool, closed: bool) -> list[tuple[str, ...]]:
    header = ("WAITPOINT", "WORKORDER", "STATE", "WAITING-FOR", "APPROVED-BY", "EXPIRES")
    rows: list[tuple[str, ...]] = [(("NAMESPACE",) if namespaces else ()) + header]
    for wp in items:
        st = wp.get("status") or {}
        if not closed and st.get("state") == "closed":
            continue
        state = st.get("state") or "-"
        if st.get("closeReason"):
            state = f"{state} ({st['closeReason']})"
        row = (
            wp["metadata"]["name"],
            wp["spec"]["workOrderName"],
            state,
            st.get("waitingFor") or "-",
            approved_by(st),
            st.get("expiresAt") or "-",
        )
        rows.append(((wp["metadata"]["namespace"],) if namespaces else ()) + row)
    return rows


async def _pending(args: argparse.Namespace) -> int:
    async with KubeApi(client="kubectl-workgate") as api:
        namespace = None if args.all_namespaces else args.namespace or api.default_namespace
        params = {}
        if args.workorder:
            params["labelSelector"] = f"{LABEL_WORKORDER}={label_value(args.workorder)}"
        try:
            listing = await api.get(WAITPOINTS.path(namespace), params=params or None)
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        items = [
            wp
            for wp in listing.get("items", [])
            if not args.workorder or wp["spec"].get("workOrderName") == args.workorder
        ]
        rows = pending_rows(items, namespaces=namespace is None, closed=args.all)
        if len(rows) == 1:
            print("no open waitpoints", file=sys.stderr)
            return 0
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("   ".join(cells).rstrip())
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
        "pending", parents=[ns], help="list open waitpoints: what each waits for, who approved"
    )
    pending.add_argument("workorder", nargs="?", help="only this WorkOrder's waitpoints")
    pending.add_argument("-A", "--all-namespaces", action="store_true")
    pending.add_argument("--all", action="store_true", help="include closed waitpoints")
    pending.set_defaults(func=_pending)

    def deliver(command: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(command, parents=[ns], help=help_)
        p.add_argument("waitpoint")
        if command == "signal":
            p.add_argument("name", help="signal name, e.g. approve")
        p.add_argument("--payload", default="", help="a small payload (at most 4 KiB)")
        p.add_argument("--no-wait", action="store_true", help="do not wait for the verdict")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
        p.set_defaults(func=_signal)
        return p

    approve = deliver("approve", "approve a waitpoint")
    approve.add_argument("--signal", help="which required signal (if it waits for several)")
    deliver("reject", "reject a waitpoint: its WorkOrder fails, recording you and the payload")
    deliver("signal", "deliver any named signal to a waitpoint")
    add_control_parsers(sub, ns)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = asyncio.run(args.func(args))
    return result


if __name__ == "__main__":
    sys.exit(main())
