"""`workgate agent --work-type T -- COMMAND ...`: run a command for each claimed WorkOrder.

The command gets the WorkOrder's yamlContent on stdin and WORKGATE_* variables in its
environment. Exit status 0 reports success; anything else reports failure with the tail
of the command's stderr as the error. The Lease is renewed while the command runs.

Fencing: if the claim is lost (not renewed by its renew deadline, say because the API
server is unreachable, or taken over), the command's process group gets SIGTERM, then
SIGKILL after the grace period, all before the Lease can go stale; nothing is reported,
and the attempt is retried elsewhere. An agent that dies stops renewing; its attempt
times out, and its keeper (agent/keeper.py) stops the command and what it started
within the grace period. Transient API errors never end the agent.

Stopping (SIGTERM, as when its pod is deleted, or SIGINT): the agent claims nothing more,
stops a running command as fencing does (SIGTERM, SIGKILL after 2 s) and reports that
attempt failed with reason AgentStopped, so it is retried as usual rather than after the
claim timeout; outcomes still being reported get up to 10 s to land; exit status 143
(SIGTERM) or 130 (SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from workgate.agent import leftovers
from workgate.agent.client import DEFAULT_SPREAD_SECONDS, Agent, Claim, ClaimLost
from workgate.agent.keeper import Keeper
from workgate.agent.timings import Timings
from workgate.k8s.api import KubeApi, is_transient
from workgate.logs import setup_logging

log = logging.getLogger("workgate.agent")
STDERR_TAIL = 2048


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def _stop(process: asyncio.subprocess.Process, grace: float, spare: Collection[int]) -> None:
    """SIGTERM the command's process group and whatever left it, SIGKILL them if still
    there after `grace` (one grace period for all: the fencing budget counts on it)."""
    started = time.monotonic()
    _signal_group(process, signal.SIGTERM)
    leftovers.terminate_leftovers(spare)
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
    except TimeoutError:
        _signal_group(process, signal.SIGKILL)
        await process.wait()
    _signal_group(process, signal.SIGKILL)  # stragglers that left the leader behind
    await leftovers.stop_leftovers(max(0.0, grace - (time.monotonic() - started)), spare)


async def run_command(
    claim: Claim, command: list[str], suspend_file: Path, keeper: Keeper
) -> tuple[int, str]:
    """Run `command` for the claim; ClaimLost (after stopping it) if the claim is lost.
    The keeper stops it, and all it started, should the agent die meanwhile."""
    env = keeper.command_environ | {
        "WORKGATE_SUSPEND_FILE": str(suspend_file),
        "WORKGATE_WORKORDER": claim.name,
        "WORKGATE_NAMESPACE": claim.namespace,
        "WORKGATE_ATTEMPT": str(claim.attempt),
        "WORKGATE_WORK_TYPE": str(claim.workorder["spec"]["workType"]),
    }
    await keeper.guard(claim.fencing.grace)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: fencing stops its children too
    )
    finished = asyncio.ensure_future(process.communicate(claim.yaml_content.encode()))
    lost = asyncio.ensure_future(claim.lost.wait())
    try:
        await asyncio.wait({finished, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            started = time.monotonic()
            await _stop(process, claim.fencing.grace, keeper.pids)
            log.warning(
                "%s/%s attempt %d: claim lost, command stopped in %.2fs",
                claim.namespace,
                claim.name,
                claim.attempt,
                time.monotonic() - started,
            )
            await finished
            raise ClaimLost(f"{claim.namespace}/{claim.name} attempt {claim.attempt}")
    finally:
        lost.cancel()
        if not finished.done():  # cancelled from outside (the agent stops): stop it too
            await _stop(process, 2.0, keeper.pids)
            finished.cancel()
    _, stderr = finished.result()
    left = await leftovers.stop_leftovers(claim.fencing.grace, keeper.pids)  # before it ends
    if left:
        log.warning(
            "%s/%s attempt %d: stopped %d leftover process(es) of the command",
            claim.namespace,
            claim.name,
            claim.attempt,
            left,
        )
    text = stderr.decode(errors="replace")
    if text:
        sys.stderr.write(text)
    return process.returncode or 0, text[-STDERR_TAIL:].strip()


async def attempt(
    claim: Claim,
    args: argparse.Namespace,
    ran: asyncio.Event,
    timings: Timings,
    scratch: Path,
    keeper: Keeper,
) -> None:
    """Run the command (`ran` is set once it has exited), then report its outcome; a
    revoked claim's Lease is released once the command has stopped. The command's
    suspend request goes to a file of this attempt's own in the agent's private
    `scratch` directory, removed afterwards."""
    suspend_file = scratch / f"{claim.lease.uid}.suspend.json"
    try:
        await _attempt(claim, args, ran, timings, suspend_file, keeper)
    except asyncio.CancelledError:
        if not ran.is_set():  # the agent stops: its command was stopped (run_command)
            await _hand_back(claim)
        raise
    except ClaimLost:
        if claim.revoked is not None:  # the work has stopped: the next attempt may start
            await claim.release()
        raise
    finally:
        ran.set()
        suspend_file.unlink(missing_ok=True)


async def _hand_back(claim: Claim) -> None:
    """Report an attempt whose command a stopping agent stopped as failed (retryable), so
    the next attempt need not wait for the claim to time out; best effort, bounded."""
    try:
        await asyncio.wait_for(
            claim.fail("the agent stopped, and stopped the command with it", "AgentStopped"),
            REPORT_GRACE_SECONDS,
        )
    except (ClaimLost, TimeoutError) as exc:
        log.warning("%s/%s: stopped, not reported (%s)", claim.namespace, claim.name, exc)
    except Exception as exc:  # a stopping agent reports what it can, and goes on stopping
        log.warning("%s/%s: stopped, report failed: %r", claim.namespace, claim.name, exc)
    else:
        log.info(
            "%s/%s attempt %d: stopped with the agent", claim.namespace, claim.name, claim.attempt
        )


async def _attempt(
    claim: Claim,
    args: argparse.Namespace,
    ran: asyncio.Event,
    timings: Timings,
    suspend_file: Path,
    keeper: Keeper,
) -> None:
    async with claim.kept_alive():  # renewing until the outcome is reported
        with timings.timed("command"):
            code, error = await run_command(claim, args.command, suspend_file, keeper)
        if claim.lost.is_set():
            raise ClaimLost(f"{claim.namespace}/{claim.name} attempt {claim.attempt}")
        if code == 0 and suspend_file.exists():  # noqa: ASYNC240 (one stat of a local file)
            await suspend(claim, suspend_file, Path(args.token_dir))
        else:
            ran.set()  # the agent may claim its next WorkOrder while this one reports
            with timings.timed("report"):
                if code == 0:
                    await claim.succeed()
                else:
                    await claim.fail(
                        error or f"command exited with status {code}",
                        "CommandFailed",
                        exit_code=code,
                    )
    log.info("%s/%s attempt %d: exit %d", claim.namespace, claim.name, claim.attempt, code)


# Outcomes still being reported while the agent runs its next command: bounded.
MAX_REPORTING = 4
REPORT_GRACE_SECONDS = 10.0  # how long a stopping agent waits for them


def _reported(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, ClaimLost):
        log.warning("claim lost, nothing reported: %s", exc)
    elif exc is not None and is_transient(exc):
        log.warning("API unavailable while reporting (%s)", exc or type(exc).__name__)
    elif exc is not None:
        log.error("reporting failed", exc_info=exc)


def _watch_children_with_pidfds() -> None:
    """Python 3.11 waits for each command with a thread of its own (ThreadedChildWatcher);
    a pidfd in the event loop costs less per command (3.12 chooses it by itself)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))  # the kernel may lack it (Linux < 5.3)
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


async def serve(args: argparse.Namespace) -> int:
    _watch_children_with_pidfds()
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM stops the agent as SIGINT does: the `finally`s below stop, report and log.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    scratch = Path(tempfile.mkdtemp(prefix="workgate-agent-"))  # 0700: suspend requests
    try:
        return await _serve(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _serve(args: argparse.Namespace, scratch: Path) -> int:
    if not leftovers.adopt_orphans():
        log.info("not a subreaper here: a command that leaves its process group may outlive it")
    # no aiohttp in an agent: its own small HTTP/1.1 client
    async with KubeApi(transport="http11", client="workgate-agent") as api:
        agent = Agent(
            api,
            args.work_type,
            namespace=args.namespace,
            instance=args.instance,
            spread_seconds=args.spread_seconds,
        )
        log.info(
            "agent %s (%s) waiting for %s work",
            await agent.identity(),
            agent.instance,
            args.work_type,
        )
        reporting: set[asyncio.Task[None]] = set()
        running: dict[asyncio.Task[None], asyncio.Event] = {}
        keeper = Keeper()
        try:
            await keeper.start()
            while True:
                try:
                    if len(reporting) >= MAX_REPORTING:
                        await asyncio.wait(reporting, return_when=asyncio.FIRST_COMPLETED)
                    with agent.timings.timed("to next claim"):
                        claim = await agent.wait_for_claim()
                    ran = asyncio.Event()
                    task = asyncio.create_task(
                        attempt(claim, args, ran, agent.timings, scratch, keeper)
                    )
                    reporting.add(task)
                    running[task] = ran
                    task.add_done_callback(reporting.discard)
                    task.add_done_callback(lambda t: running.pop(t, None))
                    task.add_done_callback(_reported)
                    await ran.wait()  # one command at a time; its report may still run
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("API unavailable (%s); carrying on", exc or type(exc).__name__)
                    await asyncio.sleep(1.0)
                if args.once:
                    await asyncio.gather(*reporting, return_exceptions=True)
                    return 0
        finally:
            for task, ran in list(running.items()):
                if not ran.is_set():
                    task.cancel()  # its command is stopped on the way out (run_command)
            if reporting:  # let the outcomes land, for a while (else the claims time out)
                _, late = await asyncio.wait(reporting, timeout=REPORT_GRACE_SECONDS)
                for task in late:
                    task.cancel()
                await asyncio.gather(*reporting, return_exceptions=True)
            await keeper.close()
            await agent.close()
            log.info("stopping; where the time went: %s", agent.timings.summary())


async def suspend(claim: Claim, request_file: Path, token_dir: Path) -> None:
    """The command asked to suspend, writing to $WORKGATE_SUSPEND_FILE a JSON object:
    {"key": ..., "requiredSignalNames": [...], "timeoutSeconds": N, "onTimeout": "Fail"}."""
    request = json.loads(await asyncio.to_thread(request_file.read_text))
    suspension = await claim.suspend(
        str(request["key"]),
        list(request.get("requiredSignalNames") or []),
        timeout_seconds=request.get("timeoutSeconds"),
        on_timeout=str(request.get("onTimeout", "Fail")),
    )
    path = token_dir / f"{suspension.namespace}.{suspension.waitpoint}.token"
    await asyncio.to_thread(_write_private, path, suspension.token)
    log.info(
        "suspended %s/%s at waitpoint %s; its token is in %s",
        claim.namespace,
        claim.name,
        suspension.waitpoint,
        path,
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(text)


def add_agent_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("agent", help="claim and execute WorkOrders of one work type")
    parser.add_argument("--work-type", required=True)
    parser.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    parser.add_argument(
        "--instance",
        default=None,
        help="name of this process among agents of the same identity (default: host + random)",
    )
    parser.add_argument(
        "--spread-seconds",
        type=float,
        default=DEFAULT_SPREAD_SECONDS,
        help="at most this long an agent defers to agents ranking new work higher",
    )
    parser.add_argument("--once", action="store_true", help="exit after one WorkOrder")
    parser.add_argument(
        "--token-dir",
        default=str(Path.home() / ".workgate" / "tokens"),
        help="where the tokens of waitpoints this agent suspends at are written (0600)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        print("workgate agent: give the command after --", file=sys.stderr)
        return 2
    setup_logging("info")
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM
        return 143
