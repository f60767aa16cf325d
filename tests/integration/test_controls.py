"""Work controls against the real API server: cancel, suspend/resume, retry, TTL, deadlines,
failure policy, concurrency limits and priority.

Users act as users do, with `kubectl` and `kubectl workgate`. The evidence is the work's
own: every agent command appends `time workorder attempt pid word` lines to a log (start,
a heartbeat every 0.1 s, and end, its termination, or a SIGTERM it ignored), so "it
stopped", "it never started" and "no more than two ran at once" are read from what the
commands did, not from the operator's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    SHIPPED_ROLES,
    create_workorder,
    finish_build_run,
    get_workorder,
    list_items,
    service_account_kubeconfig,
    start_with_webhook,
    wait_for,
    wait_phase,
    workorder,
)
from tests.integration.evidence import WatchRecorder
from tests.integration.test_waitpoints import plugin
from tests.unit.test_argocd_health import workorder_health
from workgate.api.wire import ANNOTATION_RERUN, parse_time
from workgate.core.claims import Fencing
from workgate.k8s.api import (
    BUILDRUNS,
    LEASES,
    SECRETS,
    WAITPOINTS,
    WORKORDERS,
    ApiError,
    Body,
    KubeApi,
)

pytestmark = pytest.mark.integration

REVOKED = "workgate.io/revoked"
PROMPT = 3.0  # seconds from an event to the agent acting on it, on a loaded 2-core machine
EXIT_CODE = "workgate.io/exit-code"

# The work. argv: log file, a plan per attempt ("seconds[:exit code]", comma separated, the
# last one repeating; "go" for seconds: until a file named as the log plus ".go" exists),
# and what to do on SIGTERM: "exit" (log it, exit 143) or "ignore" (log it, carry on: only
# SIGKILL stops it).
WORK = textwrap.dedent(
    """
    import os, signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    attempt = int(os.environ["WORKGATE_ATTEMPT"])
    me = f"{os.environ['WORKGATE_WORKORDER']} {attempt} {os.getpid()}"
    def say(what):
        log.write(f"{time.time():.3f} {me} {what}\\n")
    plans = sys.argv[2].split(",")
    seconds, _, code = plans[min(attempt, len(plans)) - 1].partition(":")
    def term(*_):
        if sys.argv[3] == "ignore":
            say("term-ignored")
            return
        say("terminated"); sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    say("start")
    end = time.time() + (600 if seconds == "go" else float(seconds))
    while time.time() < end and not (seconds == "go" and os.path.exists(sys.argv[1] + ".go")):
        time.sleep(0.1); say("alive")
    say("end")
    sys.exit(int(code or 0))
    """
)


@dataclass
class Execution:
    """One run of the command: a WorkOrder's attempt in one process."""

    workorder: str
    attempt: int
    pid: int
    started: float
    last: float  # the time of its last line
    words: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # the first line of each word

    @property
    def last_word(self) -> str:
        return self.words[-1]

    def first(self, word: str) -> float | None:
        return self.times.get(word)


class Work:
    """The command agents run, and what its log says it did."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "work.py"
        self.script.write_text(WORK)
        self.log = directory / "work.log"
        self.log.touch()

    def command(self, plan: str = "0.2", on_term: str = "exit") -> list[str]:
        return [sys.executable, str(self.script), str(self.log), plan, on_term]

    def go(self) -> None:
        """Commands whose plan is "go" end now."""
        self.log.with_name(self.log.name + ".go").touch()

    def executions(self, name: str | None = None) -> list[Execution]:
        runs: dict[tuple[str, str, str], Execution] = {}
        for line in self.log.read_text().splitlines():
            stamp, wo, attempt, pid, word = line.split()
            key, t = (wo, attempt, pid), float(stamp)
            if key not in runs:
                runs[key] = Execution(wo, int(attempt), int(pid), t, t)
            run = runs[key]
            run.last = t
            run.words.append(word)
            run.times.setdefault(word, t)
        found = sorted(runs.values(), key=lambda r: r.started)
        return [r for r in found if name is None or r.workorder == name]

    async def started(self, name: str, count: int = 1) -> list[Execution]:
        async def probe() -> list[Execution] | None:
            runs = self.executions(name)
            return runs if len(runs) >= count else None

        found: list[Execution] = await wait_for(
            probe, timeout=90, interval=0.1, what=f"{count} execution(s) of {name}"
        )
        return found


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Work]:
    made = Work(tmp_path)
    yield made
    # Commands an agent left running (their own sessions outlive a killed agent): this
    # test's own processes, by the pids they logged.
    for run in made.executions():
        if pid_alive(run.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(run.pid), signal.SIGKILL)  # the command's group


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    async def ready(self) -> None:
        """Until it says it waits for work (its feed is listening)."""

        async def listening() -> bool:
            return "waiting for" in self.log.read_text(errors="replace")

        await wait_for(listening, timeout=60, interval=0.1, what=f"the agent of {self.log}")


@pytest.fixture
def start_agent(kubectl: Any, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """`workgate agent --work-type T --namespace NS -- COMMAND`, stopped at the end. Agents
    authenticate as a ServiceAccount of their own holding the shipped `workgate-agent`
    role, as installed agents do: not as the operator's user, which admission trusts."""
    started: list[subprocess.Popen[bytes]] = []
    configs: dict[str, str] = {}

    def agent_config(namespace: str) -> str:
        if namespace not in configs:
            kubectl("apply", "-f", str(SHIPPED_ROLES))
            directory = tmp_path / f"agent-{namespace}"
            directory.mkdir()
            configs[namespace] = service_account_kubeconfig(kubectl, namespace, "agent", directory)
            kubectl(
                "create", "rolebinding", "agent-workgate-agent", "-n", namespace,
                "--clusterrole=workgate-agent", f"--serviceaccount={namespace}:agent",
            )  # fmt: skip
        return configs[namespace]

    def start(work_type: str, namespace: str, command: list[str]) -> AgentProcess:
        kubeconfig = agent_config(namespace)
        index = len(started)
        path = tmp_path / f"agent-{index}.log"
        out = path.open("ab")
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "workgate.cli.main", "agent", "--work-type", work_type,
                "--namespace", namespace, "--instance", f"agent-{index}", "--", *command,
            ],
            env={**os.environ, "KUBECONFIG": kubeconfig},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(agent)
        return AgentProcess(agent, path)

    yield start
    for agent in started:
        agent.send_signal(signal.SIGINT)  # it stops its command on the way out
    for agent in started:
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()


async def workgate(*args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    """`kubectl workgate ARGS` in a thread: the test's own watches keep running meanwhile."""
    return await asyncio.to_thread(plugin, *args, kubeconfig=kubeconfig)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def absent(api: KubeApi, path: str) -> bool:
    try:
        await api.get(path)
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


async def reach(
    api: KubeApi, namespace: str, name: str, *phases: str, timeout: float = 30.0
) -> Body:
    """wait_phase, failing with the status last seen (what the operator did instead)."""
    try:
        return await wait_phase(api, namespace, name, *phases, timeout=timeout)
    except AssertionError as exc:
        status = (await get_workorder(api, namespace, name)).get("status")
        raise AssertionError(f"{exc}; {name}'s status: {status}") from None


def condition(wo: Body, type_: str) -> dict[str, Any]:
    for c in (wo.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    raise AssertionError(f"{wo['metadata']['name']} has no {type_} condition: {wo.get('status')}")


def wall(monotonic_at: float) -> float:
    """A time.monotonic() reading as wall-clock time (the work's log is in wall time)."""
    return time.time() - (time.monotonic() - monotonic_at)


# --- fencing when the agent dies ---------------------------------------------------------


async def test_a_killed_agents_command_dies_with_it_before_anyone_else_may_claim(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """SIGKILL leaves an agent no chance to stop its command: its keeper sees the agent's
    pipe close and stops the command and all it started (agent/keeper.py), SIGKILL
    after the grace even when it ignores SIGTERM, well before the claim goes stale and a
    second agent runs the attempt's retry. Proven from the command's own log."""
    timeout = 6
    fencing = Fencing.for_duration(timeout)
    start_operator(namespace)
    first = start_agent("ctl", namespace, work.command("120,0.2", "ignore"))
    await create_workorder(
        api, namespace,
        workorder("orphan", "ctl", yaml="{}", claimTimeoutSeconds=timeout, backoffSeconds=1),
    )  # fmt: skip
    (run,) = await work.started("orphan")
    killed = time.time()
    first.proc.kill()
    await wait_for(lambda: not pid_alive(run.pid), timeout=30, what="the command gone")
    (run,) = work.executions("orphan")
    assert "term-ignored" in run.words, run.words  # told by the keeper, not by the agent
    assert run.last - killed <= fencing.grace + PROMPT, (run.last - killed, fencing.grace)
    start_agent("ctl", namespace, work.command("120,0.2", "ignore"))
    done = await reach(api, namespace, "orphan", "SUCCEEDED", "FAILED", timeout=90)
    assert done["status"]["phase"] == "SUCCEEDED", done["status"]
    runs = work.executions("orphan")
    assert [r.attempt for r in runs] == [1, 2], runs
    assert runs[1].started > runs[0].last, "attempt 2 started while attempt 1 still ran"
    # nothing was reported for attempt 1 (its agent died): it timed out, then was retried
    assert (done["status"]["retryCount"], done["status"]["lastErrorReason"]) == (1, "ClaimTimedOut")


# --- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("on_term", ["exit", "ignore"])
async def test_cancel_stops_the_running_command_within_its_grace_period(
    api: KubeApi,
    namespace: str,
    start_operator: Any,
    start_agent: Any,
    work: Work,
    on_term: str,
) -> None:
    """The command gets SIGTERM promptly once the operator revokes the claim (the agent
    hears of it from its Lease, not at its next renewal: with the default claim timeout
    that is 20 minutes away), and is gone within the grace period after it (SIGKILL, when
    it ignores SIGTERM); the WorkOrder ends CANCELLED, is not retried, and a retry runs it
    again."""
    timeout = 3600 if on_term == "exit" else 6  # the default; a 1 s grace for the SIGKILL
    fencing = Fencing.for_duration(timeout)
    start_operator(namespace)
    start_agent("ctl", namespace, work.command("120,0.2", on_term))
    await create_workorder(
        api, namespace, workorder("long", "ctl", yaml="{}", claimTimeoutSeconds=timeout)
    )
    (run,) = await work.started("long")
    assert run.attempt == 1
    await reach(api, namespace, "long", "CLAIMED")  # the operator knows it runs
    async with WatchRecorder(api, LEASES.path(namespace)) as leases:
        requested = time.time()
        out = ok(await workgate("cancel", "long", "-n", namespace, "--timeout", "60"))
        assert "workorder.workgate.io/long cancel requested" in out
        assert "workorder.workgate.io/long CANCELLED" in out
        await wait_for(lambda: absent(api, LEASES.path(namespace, "long-claim")),
                       timeout=30, what="the agent to release the revoked claim")  # fmt: skip
        revocations = leases.of("MODIFIED", lambda b: bool(
            (b["metadata"].get("annotations") or {}).get(REVOKED)))  # fmt: skip
    assert revocations, "the operator never revoked the claim Lease"
    revoked_at = wall(revocations[0].at)
    assert revoked_at >= requested

    await wait_for(lambda: not pid_alive(run.pid), timeout=30, what="the command gone")
    (run,) = work.executions("long")  # read again: the whole of its log
    assert "end" not in run.words, f"it ran to its end instead of being stopped: {run.words}"
    if on_term == "exit":
        assert run.last_word == "terminated", run.words
        stopped = run.first("terminated")
    else:
        assert "term-ignored" in run.words, run.words
        stopped = run.first("term-ignored")
        # SIGKILL within the grace period of the SIGTERM: the last heartbeat says when.
        assert stopped is not None
        assert run.last - stopped <= fencing.grace + 0.5, (run.last - stopped, fencing.grace)
    assert stopped is not None
    # SIGTERM follows the revocation at once (the agent watches its Lease).
    assert stopped - revoked_at <= PROMPT, (stopped - revoked_at, fencing)

    wo = await get_workorder(api, namespace, "long")
    status = wo["status"]
    assert (status["phase"], status["attempt"]) == ("CANCELLED", 1), status
    assert condition(wo, "Cancelled")["status"] == "True"
    assert workorder_health(wo)["status"] == "Degraded"  # deploy/argocd, on what the operator wrote
    assert len(work.executions("long")) == 1, "a cancelled WorkOrder was retried"

    # retry: spec.cancel is cleared with the rerun, and the work runs again (attempt 2).
    out = ok(await workgate("retry", "long", "-n", namespace, "--timeout", "60"))
    assert "spec.cancel was true; set it to false" in out
    done = await reach(api, namespace, "long", "SUCCEEDED", "FAILED", timeout=60)
    assert done["status"]["phase"] == "SUCCEEDED", done["status"]
    assert done["spec"]["cancel"] is False
    runs = work.executions("long")
    assert [r.attempt for r in runs] == [1, 2] and runs[1].last_word == "end", runs
    assert [h["phase"] for h in done["status"]["history"]] == ["CANCELLED"]


async def test_cancel_stops_a_claim_the_operator_had_not_recorded_yet(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """Agents claim new work before the operator has looked at it. A cancel that meets such
    a claim (here: made while no operator runs) must stop the command as well, not leave it
    running under a WorkOrder that says CANCELLED."""
    await start_agent("ctl", namespace, work.command("120")).ready()
    await create_workorder(api, namespace, workorder("early", "ctl", yaml="{}"))
    (run,) = await work.started("early")
    ok(await workgate("cancel", "early", "-n", namespace, "--no-wait"))
    async with WatchRecorder(api, LEASES.path(namespace)) as leases:
        start_operator(namespace)
        await reach(api, namespace, "early", "CANCELLED", timeout=60)
        await wait_for(lambda: not pid_alive(run.pid), timeout=30,
                       what="the command stopped")  # fmt: skip
        # The recorder's watch may trail the agent's: catch up before reading what it saw.
        await leases.caught_up()
        revoked = leases.of("MODIFIED", lambda b: bool(
            (b["metadata"].get("annotations") or {}).get(REVOKED)))  # fmt: skip
    (run,) = work.executions("early")
    assert run.last_word == "terminated", run.words
    assert revoked, "the claim was not revoked (the agent is never told to stop)"
    # managedFields say which part of workgate wrote what (each names itself as a client):
    # the plugin spec.cancel, the operator the status and the revocation, the agent its claim.
    wo = await api.get(WORKORDERS.path(namespace, "early"))
    writers = {(m["manager"], m.get("subresource", "")) for m in wo["metadata"]["managedFields"]}
    assert {("kubectl-workgate", ""), ("workgate", "status")} <= writers, writers
    # The revoked claim as the watch saw it: its holder releases it once the command has
    # stopped, so it may be gone by now.
    claimants = {m["manager"] for m in revoked[-1].body["metadata"]["managedFields"]}
    assert {"workgate-agent", "workgate"} <= claimants, claimants


@pytest.fixture
def author_config(kubectl: Any, namespace: str, tmp_path: Path) -> str:
    """A user bound to the built-in `edit` role in the namespace, and nothing else."""
    kubectl("apply", "-f", str(SHIPPED_ROLES))  # workgate-author aggregates into edit
    config = service_account_kubeconfig(kubectl, namespace, "author", tmp_path)
    kubectl(
        "create", "rolebinding", "author-edit", "--clusterrole=edit",
        f"--serviceaccount={namespace}:author", "-n", namespace,
    )  # fmt: skip
    return config


async def test_an_edit_user_cancels_a_build_and_its_buildrun_is_cancelled(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, author_config: str
) -> None:
    """In the Shipwright stand-in's namespace: the operator asks Shipwright to cancel the
    BuildRun (spec.state), the test answers as Shipwright does, the WorkOrder is CANCELLED."""
    user = f"system:serviceaccount:{namespace}:author"

    async def may_patch() -> bool:
        answer = kubectl("auth", "can-i", "patch", "workorders.workgate.io", "-n", namespace,
                         f"--as={user}", check=False).stdout.strip()  # fmt: skip
        return answer == "yes"

    await wait_for(may_patch, timeout=60, interval=0.5, what="edit to aggregate workgate-author")
    start_operator(namespace)
    await create_workorder(api, namespace, workorder("img", maxRetries=3))
    await reach(api, namespace, "img", "CLAIMED")
    await wait_for(lambda: api.get(BUILDRUNS.path(namespace, "img-a1")), what="BuildRun img-a1")

    cancel = asyncio.create_task(
        workgate("cancel", "img", "-n", namespace, "--timeout", "60", kubeconfig=author_config)
    )

    async def cancel_asked() -> Body | None:
        run = await api.get(BUILDRUNS.path(namespace, "img-a1"))
        return run if run["spec"].get("state") == "BuildRunCanceled" else None

    try:
        await wait_for(cancel_asked, timeout=30, what="spec.state BuildRunCanceled")
        # Shipwright's answer to a cancelled BuildRun: Succeeded False, BuildRunCanceled.
        await finish_build_run(api, namespace, "img-a1", succeeded=False,
                               reason="BuildRunCanceled",
                               message="The user requested the BuildRun to be canceled")  # fmt: skip
    finally:
        result = await cancel
    assert "workorder.workgate.io/img CANCELLED" in ok(result)
    wo = await get_workorder(api, namespace, "img")
    assert (wo["status"]["phase"], wo["status"]["attempt"]) == ("CANCELLED", 1)
    runs = await list_items(api, BUILDRUNS.path(namespace))
    assert [r["metadata"]["name"] for r in runs] == ["img-a1"], "a cancelled build was retried"


# --- suspend / resume ---------------------------------------------------------------------


async def test_the_default_pending_phase_does_not_pass_a_gate(
    api: KubeApi, namespace: str, start_agent: Any, work: Work
) -> None:
    """The API server shows a new WorkOrder PENDING before anyone has looked at it (the
    CRD's default). An agent must not take that for the operator's PENDING: a WorkOrder
    with a gate before execution stays unclaimed. No operator runs here (so nothing else
    stands in the way, no webhook, no WAITING written); a sentinel without a gate proves
    the agent was claiming meanwhile."""
    agent = start_agent("gated-work", namespace, work.command("0.1")).proc
    gates = [{"key": "go", "stage": "BeforeExecution", "forbidSelfApproval": False}]
    await create_workorder(api, namespace, workorder("gated", "gated-work", yaml="{}", gates=gates))
    shown = (await get_workorder(api, namespace, "gated")).get("status") or {}
    assert shown.get("phase") == "PENDING" and shown.get("observedGeneration") == 0, shown

    await create_workorder(api, namespace, workorder("sentinel", "gated-work", yaml="{}"))
    await wait_for(lambda: work.executions("sentinel"), timeout=60, what="the sentinel run")
    assert not work.executions("gated"), "a gated WorkOrder ran before its gate opened"
    assert await absent(api, LEASES.path(namespace, "gated-claim")), "the gated one was claimed"
    assert agent.poll() is None, "the agent stopped"


async def test_a_suspended_workorder_is_not_claimed_until_resumed(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    start_operator(namespace)
    await create_workorder(api, namespace, workorder("held", "hold", yaml="{}"))
    await reach(api, namespace, "held", "PENDING")
    out = ok(await workgate("suspend", "held", "-n", namespace))
    assert "workorder.workgate.io/held SUSPENDED" in out
    held = await get_workorder(api, namespace, "held")
    assert held["spec"]["suspend"] is True
    assert condition(held, "Suspended")["status"] == "True"
    assert workorder_health(held)["status"] == "Suspended"

    # An agent of the type, running from here on; a sentinel proves it claims work.
    agent = start_agent("hold", namespace, work.command("0.2")).proc
    await create_workorder(api, namespace, workorder("sentinel", "hold", yaml="{}"))
    await reach(api, namespace, "sentinel", "SUCCEEDED", timeout=60)
    assert work.executions("sentinel"), "the agent never ran the sentinel"
    assert not work.executions("held"), "a suspended WorkOrder was executed"
    held = await get_workorder(api, namespace, "held")
    assert held["status"]["phase"] == "SUSPENDED", held["status"]
    assert await absent(api, LEASES.path(namespace, "held-claim")), (
        "a suspended WorkOrder was claimed"
    )
    assert agent.poll() is None, "the agent stopped"

    resumed = time.time()
    ok(await workgate("resume", "held", "-n", namespace))
    done = await reach(api, namespace, "held", "SUCCEEDED", timeout=60)
    (run,) = work.executions("held")
    assert run.started > resumed, (run.started, resumed)
    assert done["status"]["attempt"] == 1
    assert condition(done, "Suspended")["status"] == "False"


async def test_suspending_a_running_attempt_lets_it_finish_and_holds_the_retry(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """As Job.spec.suspend here: the running attempt runs to its end (it fails), and its
    retry waits until the WorkOrder is resumed."""
    start_operator(namespace)
    start_agent("hold", namespace, work.command("3:1,0.2"))
    await create_workorder(
        api, namespace, workorder("busy", "hold", yaml="{}", maxRetries=2, backoffSeconds=1)
    )
    (run,) = await work.started("busy")
    ok(await workgate("suspend", "busy", "-n", namespace))
    suspended = await reach(api, namespace, "busy", "SUSPENDED", timeout=60)
    assert suspended["status"]["lastErrorReason"] == "CommandFailed", suspended["status"]
    (run,) = work.executions("busy")
    assert run.last_word == "end", f"the running attempt was stopped: {run.words}"
    # The backoff (1 s) passes; the retry must still not start. The sentinel (it runs as
    # busy's attempt 1 did, failing after 3 s) bounds the wait: the agent was free.
    await create_workorder(api, namespace, workorder("sentinel", "hold", yaml="{}"))
    await work.started("sentinel")

    async def sentinel_ended() -> bool:
        return work.executions("sentinel")[0].last_word == "end"

    await wait_for(sentinel_ended, timeout=60, what="the sentinel's first attempt to end")
    suspended = await get_workorder(api, namespace, "busy")
    next_retry = parse_time(suspended["status"].get("nextRetryAfter"))
    if next_retry is not None:
        await wait_for(lambda: time.time() > next_retry.timestamp() + 1, timeout=30,
                       what="the retry's time to pass")  # fmt: skip
    assert len(work.executions("busy")) == 1, "a retry ran while suspended"
    assert (await get_workorder(api, namespace, "busy"))["status"]["phase"] == "SUSPENDED"

    resumed = time.time()
    ok(await workgate("resume", "busy", "-n", namespace))
    done = await reach(api, namespace, "busy", "SUCCEEDED", timeout=60)
    runs = work.executions("busy")
    assert [r.attempt for r in runs] == [1, 2] and runs[1].started > resumed, runs
    assert done["status"]["attempt"] == 2


# --- retry --------------------------------------------------------------------------------


async def test_retry_after_failed_runs_again_with_history(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    start_operator(namespace)
    start_agent("flaky", namespace, work.command("0.2:3,0.2:0"))
    await create_workorder(api, namespace, workorder("once", "flaky", yaml="{}", maxRetries=0))
    failed = await reach(api, namespace, "once", "FAILED", timeout=60)
    assert (failed["status"]["attempt"], failed["status"]["lastErrorReason"]) == (
        1,
        "CommandFailed",
    )

    out = ok(await workgate("retry", "once", "-n", namespace, "--timeout", "60"))
    assert "retry requested" in out and "spec.cancel" not in out
    done = await reach(api, namespace, "once", "SUCCEEDED", "FAILED", timeout=60)
    status = done["status"]
    assert status["phase"] == "SUCCEEDED", status
    assert status["attempt"] == 2  # attempts keep counting up across runs
    value = done["metadata"]["annotations"][ANNOTATION_RERUN]
    assert status["rerun"] == value
    assert status["retryBase"] == status["retryCount"] == 1
    (previous,) = status["history"]
    assert (previous["phase"], previous["firstAttempt"], previous["lastAttempt"]) == (
        "FAILED",
        1,
        1,
    )
    runs = work.executions("once")
    assert [(r.attempt, r.last_word) for r in runs] == [(1, "end"), (2, "end")]

    # Only a FAILED or CANCELLED WorkOrder can be retried; nothing is written otherwise.
    refused = await workgate("retry", "once", "-n", namespace)
    assert refused.returncode == 1
    assert "is SUCCEEDED: only a FAILED or CANCELLED WorkOrder can be retried" in refused.stderr
    after = await get_workorder(api, namespace, "once")
    assert after["metadata"]["annotations"][ANNOTATION_RERUN] == value


# --- TTL ----------------------------------------------------------------------------------


async def test_ttl_deletes_a_finished_workorder_and_its_children(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """The operator's default TTL (env) deletes a finished WorkOrder no sooner than its TTL
    after completion; the garbage collector takes its Waitpoint and token Secret; a
    WorkOrder's own longer TTL overrides the default."""
    ttl = 5
    start_operator(namespace, WORKGATE_TTL_SECONDS_AFTER_FINISHED=str(ttl))
    start_agent("tidy", namespace, work.command("0.2"))
    # An AfterSuccess gate that expires into Continue: a Waitpoint and its Secret, no signal.
    gate = {"key": "look", "stage": "AfterSuccess", "timeoutSeconds": 1, "onTimeout": "Continue"}
    # kept finishes first: by the time brief's TTL is honoured, kept's default one (had it
    # been applied instead of its own) would have been, too.
    await create_workorder(
        api, namespace, workorder("kept", "tidy", yaml="{}", ttlSecondsAfterFinished=3600)
    )
    await reach(api, namespace, "kept", "SUCCEEDED", timeout=60)
    async with WatchRecorder(api, WORKORDERS.path(namespace)) as seen:
        await create_workorder(api, namespace, workorder("brief", "tidy", yaml="{}", gates=[gate]))
        done = await reach(api, namespace, "brief", "SUCCEEDED", timeout=60)
        wp = await api.get(WAITPOINTS.path(namespace, "brief.look"))
        secret = wp["status"]["tokenSecretName"]
        children = [
            WAITPOINTS.path(namespace, "brief.look"),
            SECRETS.path(namespace, secret),
            LEASES.path(namespace, "brief-claim"),  # a successful attempt's, kept as its record
        ]
        for path in children:  # all there while it is finished, within its TTL
            await api.get(path)
        await wait_for(lambda: absent(api, WORKORDERS.path(namespace, "brief")), timeout=60,
                       what="the TTL to delete brief")  # fmt: skip
        await seen.caught_up()
        (deleted,) = seen.of("DELETED", lambda b: b["metadata"]["name"] == "brief")
    completed = parse_time(done["status"]["completedAt"])
    assert completed is not None
    # The deletion reached the test no sooner than the TTL after completion (0.5 s: the
    # API server's and the test's clocks are the same machine's, timestamps are ms).
    assert wall(deleted.at) >= completed.timestamp() + ttl - 0.5, (wall(deleted.at), completed)
    for path in children:
        await wait_for(lambda p=path: absent(api, p), timeout=90, what=f"{path} collected")
    kept = await get_workorder(api, namespace, "kept")
    assert kept["status"]["phase"] == "SUCCEEDED"


# --- deadlines ----------------------------------------------------------------------------


async def test_an_attempt_deadline_stops_a_hanging_command_as_the_policy_says(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """`retried` gets a retry after its first attempt hangs past the deadline (and fails
    after the second); `final` fails at once: its failure policy says so."""
    deadline = 3
    start_operator(namespace)
    for _ in range(2):
        start_agent("hang", namespace, work.command("120"))
    # The default claim timeout: only the deadline, never the claim, can end these attempts.
    await create_workorder(api, namespace, workorder(
        "retried", "hang", yaml="{}", attemptDeadlineSeconds=deadline, maxRetries=1,
        backoffSeconds=1))  # fmt: skip
    await create_workorder(api, namespace, workorder(
        "final", "hang", yaml="{}", attemptDeadlineSeconds=deadline, maxRetries=3,
        backoffSeconds=1,
        failurePolicy={"rules": [
            {"action": "FailWorkOrder", "onReasons": ["AttemptDeadlineExceeded"]}]}))  # fmt: skip
    retried = await reach(api, namespace, "retried", "FAILED", "SUCCEEDED", timeout=90)
    final = await reach(api, namespace, "final", "FAILED", "SUCCEEDED", timeout=90)
    for wo, attempts in ((retried, 2), (final, 1)):
        status = wo["status"]
        assert status["phase"] == "FAILED", status
        assert status["lastErrorReason"] == "AttemptDeadlineExceeded", status
        assert status["attempt"] == attempts, status
    for name, attempts in (("retried", [1, 2]), ("final", [1])):

        async def stopped(name: str = name, n: int = len(attempts)) -> bool:
            runs = work.executions(name)
            return len(runs) == n and all(not pid_alive(r.pid) for r in runs)

        await wait_for(stopped, timeout=30, what=f"{name}'s commands gone")
        runs = work.executions(name)
        assert [r.attempt for r in runs] == attempts, runs
        for run in runs:
            assert run.last_word == "terminated", run.words
            ran = run.last - run.started
            # Stopped after its deadline (counted from the claim, a moment before the
            # command starts), and promptly: the operator's timer, the agent hearing of it.
            assert deadline - 2 <= ran <= deadline + 2 * PROMPT, (name, run.attempt, ran)


async def test_an_active_deadline_fails_a_workorder_waiting_at_a_gate(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    deadline = 3
    start_operator(namespace)
    gate = {"key": "ok", "stage": "BeforeExecution", "requiredSignalNames": ["approve"]}
    await create_workorder(api, namespace, workorder(
        "gated", "never", yaml="{}", activeDeadlineSeconds=deadline, gates=[gate]))  # fmt: skip
    waiting = await reach(api, namespace, "gated", "WAITING")
    assert waiting["status"]["waitingOn"] == "ok"
    failed = await reach(api, namespace, "gated", "FAILED", timeout=60)
    status = failed["status"]
    assert status["lastErrorReason"] == "DeadlineExceeded", status
    assert status.get("retryCount", 0) == 0, status
    started, completed = parse_time(status["startTime"]), parse_time(status["completedAt"])
    assert started is not None and completed is not None
    assert (completed - started).total_seconds() >= deadline, (started, completed)
    wp = await api.get(WAITPOINTS.path(namespace, "gated.ok"))
    assert wp["status"]["state"] == "closed", wp["status"]


# --- failure policy -----------------------------------------------------------------------


async def test_a_non_retryable_exit_code_fails_at_once(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    start_operator(namespace)
    policy = {"rules": [{"action": "FailWorkOrder",
                         "onExitCodes": {"operator": "In", "values": [42]}}]}  # fmt: skip
    start_agent("policy", namespace, work.command("0.1:42"))
    await create_workorder(api, namespace, workorder(
        "fatal", "policy", yaml="{}", maxRetries=5, backoffSeconds=1, failurePolicy=policy))  # fmt: skip
    failed = await reach(api, namespace, "fatal", "FAILED", timeout=60)
    status = failed["status"]
    assert (status["attempt"], status.get("retryCount", 0)) == (1, 0), status
    assert [r.attempt for r in work.executions("fatal")] == [1]

    # Any other exit code is retried as usual (the same policy, exit 1 then success).
    start_agent("policy-2", namespace, work.command("0.1:1,0.1:0"))
    async with WatchRecorder(api, LEASES.path(namespace)) as leases:
        await create_workorder(api, namespace, workorder(
            "flaky", "policy-2", yaml="{}", maxRetries=5, backoffSeconds=1,
            failurePolicy=policy))  # fmt: skip
        done = await reach(api, namespace, "flaky", "SUCCEEDED", timeout=60)
        await leases.caught_up()
    assert done["status"]["attempt"] == 2
    assert [r.attempt for r in work.executions("flaky")] == [1, 2]
    # The agent reported the command's exit code on its claim.
    codes = {
        (b["metadata"].get("annotations") or {}).get(EXIT_CODE)
        for e in leases.events
        for b in [e.body]
        if b["metadata"]["name"] == "flaky-claim"
    }
    assert "1" in codes, codes


# --- concurrency limits and priority ------------------------------------------------------

LIMIT = 2


def peak_concurrency(runs: list[Execution]) -> int:
    """The most commands running at once, from their own first and last lines."""
    edges = sorted([(r.started, 1) for r in runs] + [(r.last, -1) for r in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def run_burst(
    api: KubeApi,
    namespace: str,
    work: Work,
    start_agents: Callable[[], Any],
    priorities: list[int],
    *,
    agents_first: bool,
    before_agents: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[list[str], list[Execution], WatchRecorder]:
    """Create a WorkOrder of type `burst` per priority, with three agents running before
    (agents_first) or started after all were created (and after `before_agents`, such as
    starting the operator); return names, runs and the record."""
    names = [f"b{i}" for i in range(len(priorities))]
    async with WatchRecorder(api, WORKORDERS.path(namespace)) as seen:
        if agents_first:
            await start_agents()
        for name, priority in zip(names, priorities, strict=True):
            body = workorder(name, "burst", yaml="{}", priority=priority)
            await create_workorder(api, namespace, body)
        if not agents_first:
            if before_agents is not None:
                await before_agents()
            await start_agents()

        async def all_done() -> bool:
            items = await list_items(api, WORKORDERS.path(namespace))
            phases = [(w.get("status") or {}).get("phase") for w in items]
            return phases.count("SUCCEEDED") == len(names)

        await wait_for(all_done, timeout=240, interval=0.5, what="every WorkOrder SUCCEEDED")
        await seen.caught_up()
    runs = work.executions()
    assert peak_concurrency(runs) <= LIMIT, (
        f"{peak_concurrency(runs)} ran at once: "
        f"{[(r.workorder, r.started, r.last, r.last_word) for r in runs]}"
    )
    # Each ran once, to its end: none was started and then stopped for being over the limit.
    assert sorted(r.workorder for r in runs) == sorted(names), [
        (r.workorder, r.last_word) for r in runs
    ]
    assert all(r.last_word == "end" for r in runs), runs
    queued = seen.of("MODIFIED", lambda b: (b.get("status") or {}).get("phase") == "QUEUED")
    assert queued, "no WorkOrder was ever QUEUED at the limit"
    for event in queued:
        queue = event.body["status"].get("queue") or {}
        assert queue.get("reason") and int(queue.get("position") or 0) >= 1, event.body["status"]
    health = workorder_health(queued[-1].body)
    assert health["status"] == "Progressing" and health["message"].startswith("queued")
    return names, runs, seen


@pytest.fixture
def burst_agents(namespace: str, start_agent: Any, work: Work) -> Callable[[], Any]:
    async def start() -> None:
        agents = [start_agent("burst", namespace, work.command("1.5")) for _ in range(3)]
        for agent in agents:
            await agent.ready()

    return start


async def test_a_concurrency_limit_holds_for_work_created_while_agents_wait(
    api: KubeApi, namespace: str, start_operator: Any, burst_agents: Any, work: Work
) -> None:
    """10 WorkOrders of a type limited to 2, created while three agents wait for that type:
    never more than 2 commands at once, by the commands' own logs (agents may claim new
    work before the operator has looked at it; the limit must hold all the same). The
    operator runs as installed, with its admission webhook, which refuses a claim past
    the limit before any command starts."""
    await start_with_webhook(
        start_operator, api, namespace, WORKGATE_CONCURRENCY_LIMITS=f"burst={LIMIT},other=7"
    )
    await run_burst(api, namespace, work, burst_agents, [0] * 10, agents_first=True)


async def test_without_the_webhook_a_claim_past_the_limit_stops_and_its_attempt_never_reruns(
    api: KubeApi, namespace: str, start_operator: Any, start_agent: Any, work: Work
) -> None:
    """With the webhook off nothing refuses a claim past a work type's limit: three agents
    claim three new WorkOrders (limit 1) before the operator runs, and start their
    commands. The operator admits one and revokes the others: those commands stop, and
    when those WorkOrders run later, it is as their next attempt. By the commands' own
    logs, no attempt of a WorkOrder ever ran twice."""
    names = ["l0", "l1", "l2"]
    for _ in names:  # first attempts run until the test says go, later ones 0.3 s
        await start_agent("limited", namespace, work.command("go,0.3")).ready()
    for name in names:
        await create_workorder(api, namespace, workorder(name, "limited", yaml="{}"))
    for name in names:
        await work.started(name)
    start_operator(namespace, WORKGATE_CONCURRENCY_LIMITS="limited=1")

    def stopped() -> list[Execution]:
        return [r for r in work.executions() if r.last_word == "terminated"]

    await wait_for(lambda: len(stopped()) == 2, timeout=90, what="two commands stopped")
    work.go()  # the admitted one ends
    for name in names:
        await reach(api, namespace, name, "SUCCEEDED", timeout=60)
    runs = work.executions()
    assert len(stopped()) == 2, [(r.workorder, r.attempt, r.words[-1]) for r in runs]
    ran = Counter((r.workorder, r.attempt) for r in runs)
    assert max(ran.values()) == 1, f"an attempt ran twice: {ran}"
    for run in stopped():
        wo = await get_workorder(api, namespace, run.workorder)
        assert wo["status"]["attempt"] == run.attempt + 1, wo["status"]
        assert wo["status"]["retryCount"] - wo["status"].get("retryBase", 0) == 0  # no retry


async def test_higher_priority_runs_first_then_the_oldest(
    api: KubeApi, namespace: str, start_operator: Any, burst_agents: Any, work: Work
) -> None:
    """10 WorkOrders queued before the operator and any agent run, limit 2: they start by priority, then
    age, and still never more than 2 at once."""
    priorities = [0, 5, 1, 9, 3, 7, 5, 8, 4, 6]  # two 5s: the older (b1) goes first

    async def operator() -> None:  # started after all 10 exist: it ranks them all at once
        await start_with_webhook(
            start_operator, api, namespace, WORKGATE_CONCURRENCY_LIMITS=f"burst={LIMIT}"
        )

    names, runs, _ = await run_burst(
        api, namespace, work, burst_agents, priorities, agents_first=False, before_agents=operator
    )
    rank = {n: (-p, i) for i, (n, p) in enumerate(zip(names, priorities, strict=True))}
    # A WorkOrder starts only when no better-ranked one still waits, except one admitted
    # with it to the other slot (which then starts before it ends).
    for run in runs:
        later_better = [
            r for r in runs if rank[r.workorder] < rank[run.workorder] and r.started > run.started
        ]
        assert len(later_better) <= LIMIT - 1, (
            run.workorder, [r.workorder for r in later_better], [r.workorder for r in runs]
        )  # fmt: skip
        for r in later_better:
            assert r.started < run.last, (run.workorder, r.workorder)
    order = [r.workorder for r in runs]
    assert set(order[:2]) == {"b3", "b7"}, order  # priorities 9 and 8
