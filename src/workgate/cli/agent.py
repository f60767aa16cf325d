"""`workgate agent --work-type T -- COMMAND ...`: run a command for each claimed WorkOrder.

The command gets the WorkOrder's yamlContent on stdin and WORKGATE_* variables in its
environment. Exit status 0 reports success; anything else reports failure with the tail
of the command's stderr as the error. The Lease is renewed while the command runs; an
agent that dies stops renewing, and its attempt times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from workgate.agent.client import Agent, Claim, ClaimLost
from workgate.k8s.api import KubeApi
from workgate.logs import setup_logging

log = logging.getLogger("workgate.agent")
STDERR_TAIL = 2048


async def run_command(claim: Claim, command: list[str], suspend_file: Path) -> tuple[int, str]:
    env = {
        **os.environ,
        "WORKGATE_SUSPEND_FILE": str(suspend_file),
        "WORKGATE_WORKORDER": claim.name,
        "WORKGATE_NAMESPACE": claim.namespace,
        "WORKGATE_ATTEMPT": str(claim.attempt),
        "WORKGATE_WORK_TYPE": str(claim.workorder["spec"]["workType"]),
    }
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, stderr = await process.communicate(claim.yaml_content.encode())
    text = stderr.decode(errors="replace")
    if text:
        sys.stderr.write(text)
    return process.returncode or 0, text[-STDERR_TAIL:].strip()


async def serve(args: argparse.Namespace) -> int:
    async with KubeApi() as api:
        agent = Agent(api, args.work_type, namespace=args.namespace, identity=args.identity)
        log.info("agent %s waiting for %s work", agent.identity, args.work_type)
        while True:
            claim = await agent.wait_for_claim(args.poll_seconds)
            suspend_file = Path(tempfile.mkdtemp(prefix="workgate-agent-")) / "suspend.json"
            try:
                async with claim.kept_alive():
                    code, error = await run_command(claim, args.command, suspend_file)
                if code == 0 and suspend_file.exists():
                    await suspend(claim, suspend_file, Path(args.token_dir))
                elif code == 0:
                    await claim.succeed()
                else:
                    await claim.fail(error or f"command exited with status {code}", "CommandFailed")
                log.info(
                    "%s/%s attempt %d: exit %d", claim.namespace, claim.name, claim.attempt, code
                )
            except ClaimLost as lost:
                log.warning("claim lost, result discarded: %s", lost)
            if args.once:
                return 0


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
    parser.add_argument("--identity", default=None, help="claimant id (default: host + random)")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
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
