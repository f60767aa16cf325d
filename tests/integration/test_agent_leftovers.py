"""What a command leaves running does not outlive its attempt, against the real API server.

The command starts a daemon that leaves its process group (`setsid`), so the group's
signals cannot reach it. The agent, the subreaper of what its commands start, stops it
all the same: when the command ends (before the outcome is reported, so before another
attempt may start) and when the command is stopped (here: the agent told SIGTERM). The
evidence is the daemon's own process: its pid, its session, and /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import create_workorder, wait_for, wait_phase, workorder
from tests.integration.test_claims import agent_process
from workgate.k8s.api import KubeApi

pytestmark = pytest.mark.integration

# Starts a daemon in a session of its own (its pid in DIR/daemon.pid), then waits until
# DIR/go exists and exits 0, or (with an argument) sleeps that long.
WORK = textwrap.dedent(
    """
    d=$1
    setsid sh -c "echo \\$\\$ > $d/daemon.pid.tmp && mv $d/daemon.pid.tmp $d/daemon.pid
                  exec sleep 300" </dev/null >/dev/null 2>&1 &
    if [ -n "$2" ]; then sleep "$2"; exit 0; fi
    while [ ! -e "$d/go" ]; do sleep 0.1; done
    """
)


def running(pid: int) -> bool:
    """/proc has it (a zombie too: an adopted orphan nobody reaped is a leak)."""
    return Path(f"/proc/{pid}").exists()


async def the_daemon(directory: Path) -> int:
    """The daemon's pid, once it runs in a session of its own (out of the command's group)."""
    pidfile = directory / "daemon.pid"
    await wait_for(pidfile.exists, timeout=60, what="the command's daemon to start")
    pid = int(pidfile.read_text())
    assert session_of(pid) == pid, "the daemon should lead a session of its own (setsid)"
    return pid


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def the_command(directory: Path, *seconds: str) -> list[str]:
    script = directory / "work.sh"
    script.write_text(WORK)
    return ["/bin/sh", str(script), str(directory), *seconds]


async def test_what_a_command_leaves_running_is_stopped_before_its_outcome_is_reported(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace)
    agent = agent_process(kubeconfig, "daemon", namespace, "one", the_command(tmp_path))
    try:
        await create_workorder(api, namespace, workorder("daemon", "daemon", yaml="{}"))
        pid = await the_daemon(tmp_path)
        (tmp_path / "go").touch()  # the command ends (exit 0), its daemon still running
        wo = await wait_phase(api, namespace, "daemon", "SUCCEEDED", "FAILED", timeout=60)
        # No wait here: the agent stops and reaps the leftovers before it reports.
        assert not running(pid), "the daemon outlived the attempt it was started by"
    finally:
        agent.terminate()
        await asyncio.to_thread(agent.wait, 30)
    assert wo["status"]["phase"] == "SUCCEEDED", wo["status"]
    assert agent.stderr is not None
    assert "stopped 1 leftover process(es) of the command" in agent.stderr.read().decode()


async def test_a_stopped_command_takes_the_daemon_it_started_with_it(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace)
    agent = agent_process(kubeconfig, "daemon", namespace, "one", the_command(tmp_path, "120"))
    try:
        await create_workorder(
            api, namespace, workorder("daemon", "daemon", yaml="{}", claimTimeoutSeconds=3600)
        )
        pid = await the_daemon(tmp_path)
        agent.send_signal(signal.SIGTERM)  # a pod being deleted: the command is stopped
        code = await asyncio.to_thread(agent.wait, 30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    assert code == 143
    await wait_for(lambda: not running(pid), timeout=10, what="the daemon to be gone")


def ended(pid: int) -> bool:
    """Gone, or a zombie: a SIGKILLed agent's orphans are re-parented to init, which
    reaps them when it does (not the agent's to reap any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


async def test_a_killed_agent_takes_its_commands_daemon_with_it(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any, tmp_path: Path
) -> None:
    """SIGKILL leaves the agent no chance to stop anything: its keeper, which outlives it,
    stops the command and the daemon that left the command's session, within the claim's
    grace period (claimTimeoutSeconds 6: 1 s), long before the claim goes stale."""
    start_operator(namespace)
    agent = agent_process(kubeconfig, "daemon", namespace, "one", the_command(tmp_path, "120"))
    pid = 0
    try:
        await create_workorder(
            api, namespace, workorder("daemon", "daemon", yaml="{}", claimTimeoutSeconds=6)
        )
        pid = await the_daemon(tmp_path)
        agent.kill()
        await asyncio.to_thread(agent.wait, 30)
        await wait_for(lambda: ended(pid), timeout=3, what="the daemon to be gone")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        if pid and not ended(pid):  # this test's own daemon, should it have failed
            os.kill(pid, signal.SIGKILL)
