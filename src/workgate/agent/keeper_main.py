"""The agent's keeper process: when the agent is gone, so is every process its commands left.

The agent (agent/keeper.py) starts this file as a process of its own, with only the
standard library (`python -I -S keeper_main.py MARK`), in a session of its own, so
that a terminal's or a process group's signals meant for the agent do not reach it. Its
stdin is a pipe from the agent, which writes one line per command: that command's
grace period in seconds. The pipe ends when the agent exits, however it exits: SIGKILL
included, since the kernel closes the agent's end. Then every process whose
environment carries the agent's mark (`WORKGATE_AGENT_MARKS` lists it: each command
the agent started, and whatever those started, daemons that left the command's
session included) gets SIGTERM, and its process group too when a marked process leads
it; whatever is still running after the last grace period the agent sent gets SIGKILL.

One keeper per agent, idle until the agent is gone, in place of a fence per command
(`setpriv` and an `sh` started before each command: twice the CPU of a short command).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

MARKS = "WORKGATE_AGENT_MARKS"  # the environment variable; space-separated marks
KILL_SECONDS = 2.0  # after SIGKILL, how long to look for stragglers started meanwhile


def marked(mark: bytes) -> list[int]:
    """Running processes whose environment lists `mark` in WORKGATE_AGENT_MARKS (a zombie
    has no environment left to read, so it is not among them)."""
    prefix = MARKS.encode() + b"="
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix) and mark in entry[len(prefix) :].split():
                found.append(int(name))
                break
    return found


def signal_all(pids: list[int], signum: int) -> None:
    """Signal each process, and each process group that one of them leads."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def stop_marked(mark: bytes, grace: float) -> int:
    """SIGTERM the marked processes, SIGKILL those still running after `grace`; how many
    there were at first."""
    first = marked(mark)
    if not first:
        return 0
    signal_all(first, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not marked(mark):
            return len(first)
    deadline = time.monotonic() + KILL_SECONDS
    while True:  # what is left, and what it started meanwhile
        left = marked(mark)
        if not left or time.monotonic() > deadline:
            return len(first)
        signal_all(left, signal.SIGKILL)
        time.sleep(0.02)


def main() -> int:
    mark = sys.argv[1].encode()
    grace = 2.0
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # the pipe's end alone tells it to act
    for line in sys.stdin.buffer:  # until the agent is gone
        try:
            grace = max(0.0, float(line))
        except ValueError:
            continue
    stop_marked(mark, grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
