"""The agent's keeper (agent/keeper.py) on this machine's processes: when an agent is
SIGKILLed, what its commands started is stopped, SIGTERM then SIGKILL after the grace
period, daemons included; nothing without the agent's mark is touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workgate.agent.keeper import MARKS, Keeper

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A stand-in agent: starts its keeper, tells it the grace period, starts a command that
# leaves a daemon in a session of its own and a child that ignores SIGTERM, prints the
# pids as JSON, then idles until killed.
AGENT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from workgate.agent.keeper import Keeper

    async def main():
        keeper = Keeper()
        await keeper.start()
        await keeper.guard(float(sys.argv[1]))
        env = keeper.environ(os.environ)
        script = (
            "setsid sleep 300 </dev/null >/dev/null 2>&1 & "
            "sh -c 'trap \\"\\" TERM; echo $$; exec sleep 300' & "
            "wait"
        )
        command = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script, env=env, start_new_session=True,
            stdout=asyncio.subprocess.PIPE,
        )
        stubborn = int((await command.stdout.readline()).decode())
        print(json.dumps({"command": command.pid, "stubborn": stubborn,
                          "keeper": keeper._process.pid}), flush=True)
        await asyncio.sleep(300)

    asyncio.run(main())
    """
)


def state(pid: int) -> str | None:
    """The process's state letter; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    return state(pid) not in (None, "Z")  # a zombie has ended (whoever reaps it)


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def daemons_of(mark: str) -> list[int]:
    """`sleep` processes that lead a session of their own and carry `mark`, found without
    the module under test."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        try:
            text = environ.read_bytes()
            comm, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)
        except OSError:
            continue
        if mark.encode() in text and comm.endswith("(sleep") and int(rest.split()[3]) == pid:
            found.append(pid)
    return found


@pytest.fixture
def agent(
    tmp_path: Path,
) -> Iterator[Callable[[float], tuple[subprocess.Popen[str], dict[str, int]]]]:
    started: list[subprocess.Popen[str]] = []
    pids: list[int] = []

    def start(grace: float) -> tuple[subprocess.Popen[str], dict[str, int]]:
        proc = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(grace)], stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        pids.extend(info.values())
        return proc, info

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
    for pid in pids:  # whatever a failed test left: this test's own processes only
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_agents_commands_and_their_daemons_are_stopped_after_the_grace(
    agent: Callable[[float], tuple[subprocess.Popen[str], dict[str, int]]],
) -> None:
    grace = 1.0
    proc, pids = agent(grace)
    mark = next(
        entry.split(b"=", 1)[1].decode()
        for entry in Path(f"/proc/{pids['command']}/environ").read_bytes().split(b"\0")
        if entry.startswith(MARKS.encode() + b"=")
    )
    assert wait_until(lambda: len(daemons_of(mark)) == 1, 10), "the daemon did not start"
    (daemon,) = daemons_of(mark)
    assert all(running(pid) for pid in (pids["command"], pids["stubborn"], daemon))

    proc.kill()  # SIGKILL: the agent stops nothing itself
    killed = time.monotonic()
    assert wait_until(lambda: not running(daemon), grace), "the daemon outlived the agent"
    assert wait_until(lambda: not running(pids["command"]), grace)
    # The one that ignores SIGTERM lasts until the grace period is over, then SIGKILL.
    assert running(pids["stubborn"]), "SIGKILLed before its grace period was over"
    assert wait_until(lambda: not running(pids["stubborn"]), grace + 3.0)
    assert time.monotonic() - killed >= grace * 0.9
    assert wait_until(lambda: not running(pids["keeper"]), 5.0), "the keeper stayed"


def keepers_of(agent_pid: int) -> list[int]:
    """The running keeper processes started by `agent_pid`, from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        try:
            argv = cmdline.read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        keeper = any(arg.endswith(b"keeper_main.py") for arg in argv)
        if ppid == agent_pid and keeper and running(pid):
            found.append(pid)
    return found


def test_a_keeper_killed_while_a_command_runs_is_replaced_and_still_guards_it(
    agent: Callable[[float], tuple[subprocess.Popen[str], dict[str, int]]],
) -> None:
    """The keeper alone is SIGKILLed while a command runs; then the agent. The command
    is stopped all the same, after its own grace period (3 s: the keeper's default,
    when told none, is 2 s)."""
    grace = 3.0
    proc, pids = agent(grace)
    os.kill(pids["keeper"], signal.SIGKILL)
    assert wait_until(lambda: bool(keepers_of(proc.pid)), 10), "no new keeper was started"
    (keeper,) = keepers_of(proc.pid)
    assert keeper != pids["keeper"]
    time.sleep(0.2)  # a margin for the grace period, written in the step that started it

    proc.kill()
    killed = time.monotonic()
    assert wait_until(lambda: not running(pids["command"]), grace), "the command outlived it"
    assert wait_until(lambda: time.monotonic() - killed > 2.5, 3.0)
    assert running(pids["stubborn"]), "SIGKILLed before its grace period: not told it"
    assert wait_until(lambda: not running(pids["stubborn"]), grace + 3.0)
    assert wait_until(lambda: not running(keeper), 5.0), "the keeper stayed"


def test_the_keeper_touches_only_what_carries_its_mark(
    agent: Callable[[float], tuple[subprocess.Popen[str], dict[str, int]]],
) -> None:
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)  # no mark
    other = Keeper()  # another agent's mark
    neighbour = subprocess.Popen(
        ["sleep", "300"], start_new_session=True, env=other.environ(os.environ)
    )
    try:
        proc, pids = agent(0.2)
        proc.kill()
        assert wait_until(lambda: not running(pids["stubborn"]), 5.0)
        assert wait_until(lambda: not running(pids["keeper"]), 5.0)
        assert stranger.poll() is None and neighbour.poll() is None
    finally:
        for process in (stranger, neighbour):
            process.kill()
            process.wait()


def test_an_agent_run_by_another_agents_command_keeps_both_marks() -> None:
    outer, inner = Keeper(), Keeper()
    env = inner.environ(outer.environ({"PATH": "/bin"}))
    assert env[MARKS].split() == [outer.mark, inner.mark]
    assert env["PATH"] == "/bin"


async def test_a_keeper_that_died_is_started_again_before_the_next_command() -> None:
    keeper = Keeper()
    await keeper.start()
    try:
        assert keeper._process is not None
        first = keeper._process.pid
        keeper._process.kill()
        await keeper._process.wait()
        await keeper.guard(1.0)
        assert keeper.running and keeper._process.pid != first
    finally:
        await keeper.close()
    assert not keeper.running
