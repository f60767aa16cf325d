"""Chaos with nothing lost: WorkOrders drained while operators, agents and the API server are
SIGKILLed, judged from evidence outside the operator. Prints figures per seed; exits 1 on a
violation.

    .venv/bin/python bench/chaos.py [--workorders 1000] [--seeds 5] [--first-seed 1]

Starts its own bare embedded control plane (a temporary state dir; the binaries `make build`
caches), then per seed, in a fresh namespace: 3 operator replicas and 10 `workgate agent`s,
N WorkOrders, half `build` (a stand-in Shipwright finishes each BuildRun after a moment,
Failed for the attempts the plan says) and half agent work (a command that logs its start
and end and fails the attempts the plan says), some behind BeforeExecution / AfterSuccess
gates that a reviewer approves (a few it rejects), some failing every attempt. Meanwhile
one operator replica and one agent, each chosen at random among those that are up, are
SIGKILLed and restarted every 1-5 s (two independent loops), and the API server is
SIGKILLed and restarted (etcd kept) when a quarter and when 60% of the WorkOrders are done.
The plans and the processes are in bench/chaos_cast.py, the checks in
bench/chaos_checks.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the evidence helpers live in tests/
    sys.path.insert(0, str(REPO))

from tests.integration.evidence import ShipwrightStandIn, WatchRecorder  # noqa: E402

from bench.chaos_cast import (  # noqa: E402
    AGENT_TYPE,
    BACKOFF_CAP,
    LONGEST,
    MAX_RETRIES,
    WORK,
    Fleet,
    attempt_of,
    create_all,
    kill_loop,
    make_plans,
    restart_apiserver,
    retrying,
    reviewer,
    revive_loop,
)
from bench.chaos_checks import Execution, Verdict, judge  # noqa: E402
from workgate.api.wire import parse_time  # noqa: E402
from workgate.devcluster.controlplane import LocalControlPlane  # noqa: E402
from workgate.k8s.api import (  # noqa: E402
    BUILDRUNS,
    LEASES,
    NAMESPACES,
    SECRETS,
    WAITPOINTS,
    WORKORDERS,
    Body,
    KubeApi,
)

POLICY = REPO / "deploy" / "identity-policy" / "policy.yaml"


@dataclass
class Outcome:
    seed: int
    workorders: int
    verdict: Verdict
    drain_seconds: float
    bound: float
    kills: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    status_retries: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    relists: int = 0
    late: str = ""  # not every WorkOrder was terminal within the bound

    @property
    def violations(self) -> list[str]:
        return ([self.late] if self.late else []) + self.verdict.violations

    def line(self) -> str:
        v = self.verdict
        return (
            f"seed {self.seed}: {self.workorders} WorkOrders drained in {self.drain_seconds:.1f}s "
            f"(bound {self.bound:.0f}s); kills: {self.kills['operator']} operator, "
            f"{self.kills['agent']} agent, {self.kills['apiserver']} API server "
            f"(exited by themselves: {self.crashes['operator']} operator, "
            f"{self.crashes['agent']} agent); executions {v.executions}, retries {v.retries} "
            f"(status retryCount sum {self.status_retries}), max overlap {v.max_overlap}, "
            f"signals {dict(self.signals)}, watch re-lists {self.relists}, "
            f"retries without a seen nextRetryAfter {v.unverified_retries}; "
            f"violations {len(self.violations)}"
        )


async def until(probe: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def background(*works: Awaitable[None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def executions_from_log(log: Path) -> list[Execution]:
    started: dict[str, tuple[str, int, float]] = {}
    ended: dict[str, tuple[float, bool | None]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        stamp, wo, number, pid, word = line.split()
        key = f"{wo}/{number}/{pid}"
        if word == "start":
            started[key] = (wo, int(number), float(stamp))
        else:
            ended[key] = (float(stamp), {"ok": True, "fail": False}.get(word))
    executions = []
    for key, (wo, attempt, start) in started.items():
        end, ok = ended.get(key, (None, None))
        executions.append(Execution(wo, attempt, start, end, ok, who=key))
    return executions


@dataclass
class Settings:
    workorders: int = 1000
    operators: int = 3
    agents: int = 10
    kill_every: tuple[float, float] = (1.0, 5.0)
    apiserver_down: tuple[float, float] = (2.0, 5.0)
    apiserver_kills_at: tuple[float, ...] = (0.25, 0.6)  # fractions of WorkOrders done
    bound: float | None = None  # seconds to drain; default 60 + 0.5 per WorkOrder

    @property
    def drain_bound(self) -> float:
        return self.bound if self.bound is not None else 60 + 0.5 * self.workorders


async def owners_missing(api: KubeApi, namespace: str) -> list[str]:
    """Leases, Secrets and Waitpoints whose controlling owner is not a living object."""
    living: set[str] = set()
    for ref in (WORKORDERS, WAITPOINTS):
        living |= {o["metadata"]["uid"] for o in (await api.get(ref.path(namespace)))["items"]}
    missing = []
    for ref in (LEASES, SECRETS, WAITPOINTS):
        for item in (await api.get(ref.path(namespace)))["items"]:
            owners = {o["uid"] for o in item["metadata"].get("ownerReferences") or []}
            if not owners & living:
                missing.append(f"{ref.plural}/{item['metadata']['name']}")
    return missing


def retry_times(workorders: WatchRecorder) -> dict[tuple[str, int], float]:
    """(WorkOrder, retry n) -> the nextRetryAfter recorded for it, as the watch saw it."""
    due: dict[tuple[str, int], float] = {}
    for seen in workorders.events:
        status = seen.body.get("status") or {}
        at = parse_time(status.get("nextRetryAfter"))
        if status.get("phase") == "RETRY_PENDING" and at is not None:
            due.setdefault((seen.name, int(status["retryCount"])), at.timestamp())
    return due


async def run_seed(
    plane: LocalControlPlane, api: KubeApi, seed: int, settings: Settings, run_dir: Path
) -> Outcome:
    rng = random.Random(seed)
    plans = {p.name: p for p in make_plans(seed, settings.workorders)}
    namespace = f"chaos-{seed}-{secrets.token_hex(3)}"
    system = f"{namespace}-system"  # the operators' token key: not among the checked Secrets
    binding_path = "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings"
    binding = f"{namespace}-identity"
    logs = run_dir / namespace
    logs.mkdir(parents=True)
    (logs / "work.py").write_text(WORK)
    work_log = logs / "work.log"
    for name in (namespace, system):
        await api.create(NAMESPACES.path(), {"metadata": {"name": name}})
    plane.kubectl("apply", "-f", str(POLICY))
    # Signals' senders are believed without the webhook (which killed replicas would take
    # down) when this admission policy records them: see deploy/identity-policy.
    made = await api.create(binding_path, {
        "metadata": {"name": binding},
        "spec": {"policyName": "workgate-identity", "matchResources": {"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    })  # fmt: skip
    settled = parse_time(made["metadata"]["creationTimestamp"])
    assert settled is not None
    kubeconfig = {"KUBECONFIG": str(plane.kubeconfig_path)}
    operators = Fleet(
        "operator",
        [["run"]] * settings.operators,
        [
            {**kubeconfig, "WORKGATE_NAMESPACES": namespace, "WORKGATE_WEBHOOK": "off",
             "WORKGATE_METRICS_PORT": "off", "WORKGATE_IDENTITY": f"workgate-operator/chaos-{i}",
             "WORKGATE_BACKOFF_CAP_SECONDS": str(BACKOFF_CAP),
             "WORKGATE_OPERATOR_NAMESPACE": system,
             "WORKGATE_IDENTITY_POLICY_BINDING": binding}
            for i in range(settings.operators)
        ],
        logs,
        "Initial authentication has finished",
    )  # fmt: skip
    command = [sys.executable, "-I", str(logs / "work.py"), str(work_log)]
    agents = Fleet(
        "agent",
        [["agent", "--work-type", AGENT_TYPE, "--namespace", namespace, "--instance",
          f"agent-{i}", "--token-dir", str(logs / "tokens"), "--", *command]
         for i in range(settings.agents)],
        [kubeconfig] * settings.agents,
        logs,
        "waiting for",
    )  # fmt: skip
    outcome = Outcome(seed, settings.workorders, Verdict(), 0.0, settings.drain_bound)
    offset = time.time() - time.monotonic()
    delays = random.Random(seed + 1)

    def build_ok(run: Body) -> bool:
        wo, attempt = attempt_of(run["metadata"]["name"])
        return attempt not in plans[wo].fail

    try:
        await asyncio.sleep(max(0.0, settled.timestamp() + 6 - time.time()))  # policy settles
        for fleet in (operators, agents):
            for i in range(len(fleet.procs)):
                fleet.start(i)
        async with (
            WatchRecorder(api, BUILDRUNS.path(namespace), outages=True) as runs,
            WatchRecorder(api, WORKORDERS.path(namespace), outages=True) as workorders,
            ShipwrightStandIn(api, namespace, runs, build_ok, outages=True,
                              delay=lambda _: delays.uniform(0.2, LONGEST)) as shipwright,
            background(
                reviewer(api, namespace, plans, outcome.signals),
                kill_loop(operators, random.Random(seed + 2), settings.kill_every),
                kill_loop(agents, random.Random(seed + 3), settings.kill_every),
                revive_loop(operators, agents),
            ) as chaos,
        ):  # fmt: skip
            started = time.monotonic()
            await create_all(api, namespace, list(plans.values()))
            kills_at = list(settings.apiserver_kills_at)
            progress: list[str] = []

            async def drained() -> bool:
                for task in chaos:
                    if task.done():
                        task.result()
                for recorder in (runs, workorders, shipwright):
                    recorder.check()
                items = (await retrying(lambda: api.get(WORKORDERS.path(namespace))))["items"]
                done = sum(
                    (w.get("status") or {}).get("phase") in ("SUCCEEDED", "FAILED") for w in items
                )
                if kills_at and done >= kills_at[0] * len(plans):
                    kills_at.pop(0)
                    await restart_apiserver(plane, rng.uniform(*settings.apiserver_down))
                    outcome.kills["apiserver"] += 1
                phases = Counter(str((w.get("status") or {}).get("phase")) for w in items)
                progress.append(f"{time.monotonic() - started:.0f}s {dict(phases)}")
                return done == len(plans)

            try:
                await until(drained, settings.drain_bound, "every WorkOrder terminal")
            except AssertionError as late:  # judged all the same: the rest may say why
                outcome.late = str(late)
            finally:
                (logs / "progress.txt").write_text("\n".join(progress))
            outcome.drain_seconds = time.monotonic() - started
            for task in chaos:
                task.cancel()
            await runs.caught_up(timeout=60)
            await workorders.caught_up(timeout=60)

            async def finished() -> bool:
                shipwright.check()
                return set(shipwright.started) <= set(shipwright.ended)

            await until(finished, 30, "the stand-in to finish every BuildRun it started")
        outcome.relists = runs.relists + workorders.relists
        outcome.kills.update(operator=operators.kills, agent=agents.kills)
        outcome.crashes.update(operator=operators.crashes, agent=agents.crashes)
        final = {w["metadata"]["name"]: w.get("status") or {}
                 for w in (await api.get(WORKORDERS.path(namespace)))["items"]}  # fmt: skip
        outcome.status_retries = sum(int(s.get("retryCount") or 0) for s in final.values())
        executions = executions_from_log(work_log)
        for seen in runs.added():
            wo, attempt = attempt_of(seen.name)
            end = shipwright.ended.get(seen.uid)
            executions.append(Execution(
                wo, attempt, shipwright.started[seen.uid] + offset,
                None if end is None else end + offset, shipwright.outcome.get(seen.uid),
                who=f"buildrun {seen.name} {seen.uid}",
            ))  # fmt: skip
        outcome.verdict = judge(
            expected={name: plan.expected for name, plan in plans.items()},
            final=final,
            executions=executions,
            retry_after=retry_times(workorders),
            max_retries=MAX_RETRIES,
            longest=LONGEST,
            orphans=await owners_missing(api, namespace),
        )
    finally:
        operators.stop()
        agents.stop()
        for path in (f"{binding_path}/{binding}", NAMESPACES.path(None, namespace),
                     NAMESPACES.path(None, system)):  # fmt: skip
            with contextlib.suppress(Exception):
                await retrying(functools.partial(api.delete, path), within=60)
    return outcome


async def main(args: argparse.Namespace) -> int:
    low, high = (float(x) for x in args.kill_every.split(":"))
    settings = Settings(workorders=args.workorders, bound=args.bound, kill_every=(low, high))
    run_dir = Path(tempfile.mkdtemp(prefix="workgate-chaos-"))
    plane = LocalControlPlane("chaos", state_dir=run_dir / "plane", bare=True)
    plane.start()
    failed = False
    try:
        async with KubeApi(api_config(plane)) as api:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                outcome = await run_seed(plane, api, seed, settings, run_dir)
                print(outcome.line(), flush=True)
                for violation in outcome.violations[:20]:
                    print(f"  VIOLATION {violation}", flush=True)
                failed |= bool(outcome.violations)
    finally:
        plane.stop()
    print(f"logs: {run_dir}")
    return 1 if failed else 0


def api_config(plane: LocalControlPlane) -> Any:
    """A client configuration for the plane (its admin kubeconfig)."""
    from workgate.k8s.kubeconfig import load_config

    return load_config(plane.kubeconfig_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workorders", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--kill-every", default="1:5", help="LOW:HIGH seconds between kills")
    parser.add_argument(
        "--bound",
        type=float,
        default=None,
        help="seconds every WorkOrder must be terminal in (default 60 + 0.5 N)",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
