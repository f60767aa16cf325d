"""The agent's side of its keeper (agent/keeper_main.py): a command does not outlive its agent.

Fencing stops a command while the agent lives (cli/agent.py). When the agent dies
(SIGKILL, OOM), nothing of it runs any more: its keeper, a small process started once
with the agent, sees the pipe from the agent end and stops every process that carries
the agent's mark in its environment, SIGTERM then SIGKILL after the command's grace
period, well before the claim can go stale (fencing's budget: the renew deadline plus
the grace ends before the Lease does). Each command's environment carries the mark
(`environ()`), and the agent tells the keeper each command's grace period before it
starts it (`guard()`).

A keeper that dies is started again at once, and told the running command's grace
period; Linux only (the keeper reads /proc), elsewhere commands run without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from workgate.agent.keeper_main import MARKS

log = logging.getLogger(__name__)
SCRIPT = Path(__file__).with_name("keeper_main.py")
LINUX = sys.platform.startswith("linux")
RESTART_SECONDS = 1.0  # a keeper that lived less than this is started again after it


def without_marks(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key != MARKS}


class Keeper:
    def __init__(self) -> None:
        self.mark = secrets.token_hex(12)
        self._process: asyncio.subprocess.Process | None = None
        self._told: float | None = None  # the grace period the running keeper knows
        self._grace: float | None = None  # the grace period of the latest command
        self._watcher: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this agent's mark added (an agent run by another agent's command
        keeps the outer mark too, so the outer keeper stops what this one started)."""
        marks = [*base.get(MARKS, "").split(), self.mark]
        return {**base, MARKS: " ".join(marks)}

    @functools.cached_property
    def command_environ(self) -> dict[str, str]:
        """The agent's own environment with the mark: every command's base (read once,
        the agent does not change its environment; os.environ decodes on each read)."""
        return self.environ(os.environ)

    @property
    def pids(self) -> frozenset[int]:
        """The keeper's process, which is not a command's leftover (agent/leftovers.py)."""
        return frozenset() if self._process is None else frozenset({self._process.pid})

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the keeper (Linux only), before the first command; one that dies is
        started again at once, and told the grace period of the command that runs."""
        if not LINUX:
            return
        self._told = None
        # No mark of its own (an outer keeper must not stop it before it has done its
        # work); a session of its own (a terminal's Ctrl-C is for the agent).
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            str(SCRIPT),
            self.mark,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=without_marks(os.environ),
            start_new_session=True,
        )
        self._watcher = asyncio.create_task(self._watch(process), name="keeper-watch")

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """A keeper that exits while the agent runs (killed, OOM) is replaced at once: the
        command that runs meanwhile must not lose its guard until the next command."""
        started = time.monotonic()
        code = await process.wait()
        if self._process is not process:  # closed, or replaced already
            return
        log.warning("the agent's keeper exited (%s); starting it again", code)
        if time.monotonic() - started < RESTART_SECONDS:  # not in a tight loop
            await asyncio.sleep(RESTART_SECONDS)
        await self._ensure()

    async def _ensure(self) -> None:
        """A keeper runs, and knows the latest command's grace period."""
        async with self._starting:
            if not self.running:
                await self.start()
            assert self._process is not None and self._process.stdin is not None
            if self._grace is not None and self._grace != self._told:
                # a few bytes, and only when it changes: the pipe holds them
                self._process.stdin.write(f"{self._grace:g}\n".encode())
                self._told = self._grace

    async def guard(self, grace: float) -> None:
        """Before a command starts: a keeper is there, and knows its grace period."""
        if not LINUX:
            return
        self._grace = grace
        await self._ensure()

    async def close(self) -> None:
        """The agent stops (its commands stopped already): the keeper finds nothing, exits."""
        process, self._process = self._process, None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if process is None or process.stdin is None:
            return
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


__all__ = ["MARKS", "Keeper"]
