"""What a command leaves running is stopped with it, as a container's processes end with
its main process.

A command that leaves its process group (`setsid`, a daemon) escapes the group's signals,
and when its parent exits it would be re-parented to init, out of the agent's sight. The
agent is therefore the subreaper of what its commands start (PR_SET_CHILD_SUBREAPER):
such a process is re-parented to the agent instead, and stays below it. The agent runs
one command at a time, so when a command ends or is stopped, every process still below
the agent is that command's: it gets SIGTERM, SIGKILL after the grace period, and is
reaped. Linux only (elsewhere nothing is adopted and the group's signals are all there is).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Collection

PR_SET_CHILD_SUBREAPER = 36
LINUX = sys.platform.startswith("linux")


def adopt_orphans() -> bool:
    """Make this process the subreaper of its descendants; whether that took."""
    if not LINUX:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def _children_files(pid: int) -> list[int] | None:
    """`pid`'s children from /proc/PID/task/*/children; None if the kernel has no such
    files (CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone meanwhile
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found += [int(child) for child in handle.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # a thread that ended meanwhile
            return None
        except OSError:
            continue
    return found


def _parents() -> dict[int, list[int]]:
    """Every process's children, from each /proc/PID/stat (the slow way)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])  # the name may hold ") "
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(root: int, spare: Collection[int] = ()) -> list[int]:
    """Every process below `root` (Linux; elsewhere none), but those in `spare` and
    what is below them."""
    if not LINUX:
        return []
    table: dict[int, list[int]] | None = None
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        below = _children_files(pid) if table is None else table.get(pid, [])
        if below is None:
            table = _parents()
            below = table.get(pid, [])
        below = [child for child in below if child not in spare]
        found += below
        todo += below
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap(pids: list[int]) -> None:
    """Collect those that are our children and have exited (adopted orphans: nobody else
    waits for them). asyncio waits for the command's own process, which is never here."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def terminate_leftovers(spare: Collection[int] = ()) -> list[int]:
    """SIGTERM everything below the agent but `spare` (its keeper); the pids told."""
    pids = descendants(os.getpid(), spare)
    _signal(pids, signal.SIGTERM)
    return pids


async def stop_leftovers(grace: float, spare: Collection[int] = ()) -> int:
    """Stop everything below the agent but `spare` (its keeper): SIGTERM, then SIGKILL
    after `grace` s for what is still running, and reap it. Only call between commands
    (the command's own process has exited and been waited for). Returns how many
    processes there were."""
    me = os.getpid()
    told = terminate_leftovers(spare)
    if not told:
        return 0
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        below = descendants(me, spare)
        _reap(below)
        if not any(_running(pid) for pid in below):
            break
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 2.0
    while True:  # SIGKILL what is left (and what it started meanwhile), until all are reaped
        below = descendants(me, spare)
        _signal([pid for pid in below if _running(pid)], signal.SIGKILL)
        _reap(below)
        if not descendants(me, spare) or time.monotonic() > deadline:
            return len(told)
        await asyncio.sleep(0.02)
