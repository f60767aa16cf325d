"""`kubectl workgate cancel|suspend|resume|retry`: the work controls, from the command line.

    kubectl workgate cancel WORKORDER [-n NS] [--timeout S] [--no-wait]
    kubectl workgate suspend WORKORDER [-n NS] [--timeout S] [--no-wait]
    kubectl workgate resume WORKORDER [-n NS] [--timeout S] [--no-wait]
    kubectl workgate retry WORKORDER [-n NS] [--timeout S] [--no-wait]

cancel sets spec.cancel (a running attempt is stopped) and waits for CANCELLED. suspend and
resume set spec.suspend and wait until the operator has seen it; an attempt already
running when a WorkOrder is suspended runs to its end. retry starts a FAILED or CANCELLED
WorkOrder over with a fresh retry budget, by a new value of the `workgate.io/rerun`
annotation (and spec.cancel false, if it was set), and waits until it left that phase.

Exit status: 0 done; 1 refused or any error; 2 the operator did not get there within
--timeout (the request stands and may still be carried out).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workgate.api.wire import ANNOTATION_RERUN, Phase, recorded_phase
from workgate.k8s.api import WORKORDERS, ApiError, Body, KubeApi

EXIT_REFUSED, EXIT_PENDING = 1, 2
RERUNNABLE = frozenset({Phase.FAILED, Phase.CANCELLED})
FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED})  # nothing left to cancel or suspend
POLL_SECONDS = 0.2
CONFLICT_RETRIES = 5


class Refused(Exception):
    """The control does not apply to the WorkOrder as it is: nothing was changed."""


@dataclass(frozen=True)
class Plan:
    """What a control writes (a merge patch; None: nothing to write), what it tells the
    user, and when the wait is over: done(current WorkOrder, the patch's response)."""

    patch: Body | None
    notes: tuple[str, ...] = ()
    done: Callable[[Body, Body], bool] = field(default=lambda _w, _p: True)
    goal: str = ""


def phase_of(wo: Body) -> str:
    return recorded_phase(wo.get("status")) or ""


def observed(wo: Body, generation: int) -> bool:
    """The operator has written a status for `generation` (or a later one) of the spec."""
    status = wo.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= generation


def new_rerun_value(now: datetime | None = None) -> str:
    """A fresh, unique value for the rerun annotation: when, and a random suffix (two
    retries within one second still differ)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def plan_cancel(wo: Body) -> Plan:
    name, phase = wo["metadata"]["name"], phase_of(wo)
    if phase == Phase.CANCELLED:
        return Plan(None, (f"workorder.workgate.io/{name} is already CANCELLED",))
    if phase in FINISHED:
        raise Refused(f"workorder.workgate.io/{name} is {phase}: finished, nothing to cancel")
    return Plan(
        {"spec": {"cancel": True}},
        done=lambda w, _: phase_of(w) == Phase.CANCELLED,
        goal="CANCELLED",
    )


def plan_suspend(wo: Body, suspend: bool) -> Plan:
    name, phase = wo["metadata"]["name"], phase_of(wo)
    spec = wo.get("spec") or {}
    verb = "suspend" if suspend else "resume"
    if suspend and phase in (*FINISHED, Phase.CANCELLED):
        raise Refused(f"workorder.workgate.io/{name} is {phase}: finished, nothing to suspend")
    if bool(spec.get("suspend")) == suspend:
        state = "suspended" if suspend else "not suspended"
        return Plan(None, (f"workorder.workgate.io/{name} is already {state}",))

    def seen(current: Body, patched: Body) -> bool:
        return observed(current, int(patched["metadata"].get("generation") or 0))

    return Plan({"spec": {"suspend": suspend}}, done=seen, goal=f"seen by the operator ({verb})")


def plan_retry(wo: Body, value: str) -> Plan:
    """Refuses unless FAILED or CANCELLED. The patch carries the resourceVersion read, so
    it applies only to the WorkOrder as it was judged (a 409 means: look again)."""
    meta = wo["metadata"]
    name, phase = meta["name"], phase_of(wo)
    if phase not in RERUNNABLE:
        shown = phase or "not started"
        raise Refused(
            f"workorder.workgate.io/{name} is {shown}: only a FAILED or CANCELLED WorkOrder "
            "can be retried"
        )
    patch: Body = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "annotations": {ANNOTATION_RERUN: value},
        }
    }
    notes: list[str] = []
    if (wo.get("spec") or {}).get("cancel"):
        patch["spec"] = {"cancel": False}
        notes.append(
            f"workorder.workgate.io/{name}: spec.cancel was true; set it to false "
            "(it would cancel the rerun at once)"
        )

    def left(w: Body, _patched: Body) -> bool:
        status = w.get("status") or {}
        return status.get("rerun") == value or phase_of(w) not in RERUNNABLE

    return Plan(patch, tuple(notes), done=left, goal=f"out of {phase}")


def describe(wo: Body) -> str:
    """One line on where the WorkOrder stands, for the end of a command."""
    name, status = wo["metadata"]["name"], wo.get("status") or {}
    parts = [f"workorder.workgate.io/{name} {phase_of(wo) or '(no status yet)'}"]
    if status.get("attempt"):
        parts.append(f"attempt {status['attempt']}")
    queue = status.get("queue") or {}
    if queue.get("position"):
        parts.append(f"queue position {queue['position']}")
    if status.get("lastErrorReason"):
        parts.append(f"last error {status['lastErrorReason']}: {status.get('lastError') or ''}")
    return ", ".join(parts).rstrip(": ")


def plan_for(command: str, wo: Body) -> Plan:
    if command == "cancel":
        return plan_cancel(wo)
    if command in ("suspend", "resume"):
        return plan_suspend(wo, command == "suspend")
    if command == "retry":
        return plan_retry(wo, new_rerun_value())
    raise ValueError(command)


async def _wait(
    api: KubeApi, path: str, plan: Plan, patched: Body, seconds: float
) -> tuple[bool, Body]:
    deadline = time.monotonic() + seconds
    while True:
        wo = await api.get(path)
        if plan.done(wo, patched):
            return True, wo
        if time.monotonic() > deadline:
            return False, wo
        await asyncio.sleep(POLL_SECONDS)


async def _control(args: argparse.Namespace, api: KubeApi, namespace: str) -> int:
    path = WORKORDERS.path(namespace, args.workorder)
    for _ in range(CONFLICT_RETRIES):
        wo = await api.get(path)
        plan = plan_for(args.command, wo)
        if plan.patch is None:
            for note in plan.notes:
                print(note)
            return 0
        try:
            patched = await api.merge_patch(path, plan.patch)
            break
        except ApiError as exc:
            if not exc.conflict:
                raise
    else:
        raise RuntimeError(f"{args.workorder} kept changing; try again")
    for note in plan.notes:
        print(note)
    print(f"workorder.workgate.io/{args.workorder} {args.command} requested")
    if args.no_wait:
        return 0
    reached, wo = await _wait(api, path, plan, patched, args.timeout)
    if not reached:
        print(
            f"{describe(wo)}: not {plan.goal} within {args.timeout:g}s (the request stands)",
            file=sys.stderr,
        )
        return EXIT_PENDING
    print(describe(wo))
    return 0


async def with_api(
    args: argparse.Namespace,
    body: Callable[[argparse.Namespace, KubeApi, str], Awaitable[int]],
) -> int:
    """Run one `kubectl workgate` command in the namespace it names (or the context's): a
    refusal or an API error is one line on stderr and exit status 1."""
    async with KubeApi(client="kubectl-workgate") as api:
        namespace = args.namespace or api.default_namespace
        try:
            return await body(args, api, namespace)
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
        except (Refused, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


async def run_control(args: argparse.Namespace) -> int:
    return await with_api(args, _control)


CONTROLS: dict[str, tuple[str, float]] = {
    "cancel": ("cancel a WorkOrder: stop its attempt, end it CANCELLED", 60.0),
    "suspend": ("suspend a WorkOrder: no attempt is claimed until it is resumed", 10.0),
    "resume": ("resume a suspended WorkOrder", 10.0),
    "retry": ("run a FAILED or CANCELLED WorkOrder again, with a fresh retry budget", 60.0),
}


def add_control_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    """Register the controls on `kubectl workgate`'s sub-command parser."""
    for command, (help_, timeout) in CONTROLS.items():
        p: Any = sub.add_parser(command, parents=[parent], help=help_)
        p.add_argument("workorder")
        p.add_argument("--no-wait", action="store_true", help="do not wait for the operator")
        p.add_argument(
            "--timeout", type=float, default=timeout, help=f"seconds to wait ({timeout:g})"
        )
        p.set_defaults(func=run_control)
