"""The chaos run's cast: what each WorkOrder is meant to do, the processes that are killed
and revived, and the client-side actors (creator, reviewer) that carry on through outages.
Used by bench/chaos.py."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.conftest import build_yaml, workorder

from bench.chaos_checks import Expected
from workgate.cli.kubectl_plugin import send_signal
from workgate.devcluster.controlplane import LocalControlPlane
from workgate.k8s.api import WAITPOINTS, WORKORDERS, ApiError, Body, KubeApi, is_transient

AGENT_TYPE = "chaos"
MAX_RETRIES = 6  # planned failures use at most 2 attempts; the rest absorb kills
CLAIM_TIMEOUT = 5  # a killed agent's attempt times out within this
BACKOFF_CAP = 2.0  # retry n waits min(1 * 2^n, 2) s (WORKGATE_BACKOFF_CAP_SECONDS)
LONGEST = 1.0  # no execution lasts longer (the work sleeps at most this, then ends)
WORK = textwrap.dedent(
    """
    import json, os, signal, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    plan = json.loads(sys.stdin.read())
    me = f"{os.environ['WORKGATE_WORKORDER']} {os.environ['WORKGATE_ATTEMPT']} {os.getpid()}"
    def say(word):  # one write(2) to an O_APPEND file: lines never interleave
        os.write(fd, f"{time.time():.6f} {me} {word}\\n".encode())
    def term(*_):
        say("terminated"); os._exit(143)
    signal.signal(signal.SIGTERM, term)
    say("start")
    time.sleep(plan["duration"])
    fails = int(os.environ["WORKGATE_ATTEMPT"]) in plan["fail"]
    say("fail" if fails else "ok")
    sys.exit(3 if fails else 0)
    """
)


@dataclass(frozen=True)
class Plan:
    """What one WorkOrder is meant to do."""

    name: str
    work_type: str
    gates: tuple[str, ...]  # stages
    reject: bool  # the reviewer rejects its (first) gate
    fail: frozenset[int]  # attempts that fail by themselves
    duration: float

    @property
    def expected(self) -> Expected:
        if self.reject:
            return Expected("FAILED", "Rejected")
        if len(self.fail) > MAX_RETRIES:
            return Expected("FAILED", attempts=MAX_RETRIES + 1)
        return Expected("SUCCEEDED")

    def body(self) -> Body:
        content = (
            build_yaml(self.name)
            if self.work_type == "build"
            else json.dumps({"duration": self.duration, "fail": sorted(self.fail)})
        )
        gates = [
            {"key": stage.lower(), "stage": stage, "requiredSignalNames": ["approve"],
             "forbidSelfApproval": False}
            for stage in self.gates
        ]  # fmt: skip
        return workorder(
            self.name, self.work_type, yaml=content, maxRetries=MAX_RETRIES, backoffSeconds=1,
            claimTimeoutSeconds=CLAIM_TIMEOUT, gates=gates,
        )  # fmt: skip


def make_plans(seed: int, total: int) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for i in range(total):
        work_type = "build" if i % 2 == 0 else AGENT_TYPE
        roll = rng.random()
        gates: tuple[str, ...] = ()
        if roll < 0.15:
            gates = ("BeforeExecution",)
        elif roll < 0.30:
            gates = ("AfterSuccess",)
        elif roll < 0.35:
            gates = ("BeforeExecution", "AfterSuccess")
        doomed = not gates and rng.random() < 0.05
        fail = (
            frozenset(range(1, MAX_RETRIES + 2))
            if doomed
            else frozenset(a for a in (1, 2) if rng.random() < 0.3)
        )
        plans.append(
            Plan(f"wo-{i:04d}", work_type, gates, bool(gates) and rng.random() < 0.1, fail,
                 rng.uniform(0.1, LONGEST / 2))
        )  # fmt: skip
    return plans


def attempt_of(build_run: str) -> tuple[str, int]:
    """`<wo>-a<n>` -> (wo, n)."""
    wo, _, n = build_run.rpartition("-a")
    return wo, int(n)


class Fleet:
    """Processes of one kind, each restartable; counts kills and deaths of their own."""

    def __init__(
        self, kind: str, argvs: list[list[str]], envs: list[dict[str, str]], logs: Path, up: str
    ) -> None:
        self.kind, self.argvs, self.envs, self.logs, self.up = kind, argvs, envs, logs, up
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(argvs)
        self.offsets = [0] * len(argvs)  # where each process's current run begins in its log
        self.kills = self.crashes = 0

    def running(self) -> list[int]:
        """Those up since their last start (their log says `up`): on a loaded machine a
        Python process takes many seconds to start, and killing it before it could do
        anything would test nothing."""
        found = []
        for i, proc in enumerate(self.procs):
            path = self.logs / f"{self.kind}-{i}.log"
            if proc is not None and proc.poll() is None:
                with path.open("rb") as handle:
                    handle.seek(self.offsets[i])
                    if self.up.encode() in handle.read():
                        found.append(i)
        return found

    def start(self, i: int) -> None:
        path = self.logs / f"{self.kind}-{i}.log"
        self.offsets[i] = path.stat().st_size if path.exists() else 0
        log = path.open("ab")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "workgate.cli.main", *self.argvs[i]],
            env={**os.environ, **self.envs[i]}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
            self.kills += 1
        self.start(i)

    def revive(self) -> None:
        """What died by itself is started again, as a Deployment would."""
        for i, proc in enumerate(self.procs):
            if proc is None or proc.poll() is not None:
                self.crashes += proc is not None
                self.start(i)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def retrying(call: Callable[[], Awaitable[Any]], within: float = 180.0) -> Any:
    """`call()`, again while the API server is unreachable (it is killed on purpose)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


async def create_all(api: KubeApi, namespace: str, plans: list[Plan]) -> None:
    limit = asyncio.Semaphore(16)

    async def one(plan: Plan) -> None:
        async def create() -> None:
            try:
                await api.create(WORKORDERS.path(namespace), plan.body())
            except ApiError as exc:
                if not exc.conflict:  # a retry of a create that went through
                    raise

        async with limit:
            await retrying(create)

    await asyncio.gather(*(one(p) for p in plans))


async def reviewer(
    api: KubeApi, namespace: str, plans: dict[str, Plan], sent: Counter[str]
) -> None:
    """Opens every active gate (rejects the first gate of a `reject` plan); a signal not
    yet judged after 20 s is sent again."""
    last: dict[str, float] = {}
    while True:
        try:
            listing = await api.get(WAITPOINTS.path(namespace))
            for wp in listing["items"]:
                if (wp.get("status") or {}).get("state") != "active":
                    continue
                uid, name = wp["metadata"]["uid"], wp["metadata"]["name"]
                if time.monotonic() - last.get(uid, -1e9) < 20:
                    continue
                plan = plans[name.split(".")[0]]
                first = wp["spec"].get("key") == plan.gates[0].lower()
                verb = "reject" if plan.reject and first else "approve"
                try:
                    await send_signal(api, namespace, name, verb)
                except RuntimeError:
                    continue  # no token Secret yet
                sent[verb if uid not in last else f"{verb} again"] += 1
                last[uid] = time.monotonic()
        except Exception as exc:
            if not is_transient(exc):
                raise
        await asyncio.sleep(0.3)


async def kill_loop(fleet: Fleet, rng: random.Random, every: tuple[float, float]) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*every))
        running = fleet.running()
        if running:
            fleet.kill(rng.choice(running))


async def revive_loop(*fleets: Fleet) -> None:
    while True:
        await asyncio.sleep(0.5)
        for fleet in fleets:
            fleet.revive()


async def restart_apiserver(plane: LocalControlPlane, down: float) -> None:
    plane.kill_apiserver()
    await asyncio.sleep(down)
    child = plane.restart_apiserver()  # on this (the plane's) thread: see its docstring
    await asyncio.to_thread(plane.wait_apiserver, child)
