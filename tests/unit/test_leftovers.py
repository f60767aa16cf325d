"""Finding what a command left below the agent (agent/leftovers.py), on this machine's /proc."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workgate.agent import leftovers


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """sh -> sleep, sh -> setsid sleep: a child, a grandchild, and one out of the group."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 60 & setsid sleep 60 & wait"], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while sleeping_children(proc.pid) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield proc
    for pid in leftovers.descendants(proc.pid):
        subprocess.run(["kill", "-9", str(pid)], check=False)
    proc.kill()
    proc.wait()


def sleeping_children(parent: int) -> int:
    """Direct children of `parent` that have become `sleep` (until exec they are `sh`),
    found by scanning /proc without the module under test."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().rsplit(") ", 1)
        except OSError:
            continue
        if comm.endswith("(sleep") and int(rest.split()[1]) == parent:
            count += 1
    return count


def names(pids: list[int]) -> list[str]:
    return sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids)


def test_descendants_are_found_through_the_children_files(tree: subprocess.Popen[bytes]) -> None:
    below = leftovers.descendants(os.getpid())
    assert tree.pid in below
    assert names(leftovers.descendants(tree.pid)) == ["sleep", "sleep"]


def test_without_children_files_the_slow_way_finds_the_same(
    tree: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = sorted(leftovers.descendants(tree.pid))
    monkeypatch.setattr(leftovers, "_children_files", lambda pid: None)
    assert sorted(leftovers.descendants(tree.pid)) == fast and len(fast) == 2


def test_nothing_below_a_process_without_children() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.1)
        assert leftovers.descendants(proc.pid) == []
    finally:
        proc.kill()
        proc.wait()


def test_a_spared_process_and_what_is_below_it_are_not_leftovers(
    tree: subprocess.Popen[bytes],
) -> None:
    """The agent's keeper is its child too, and is no command's leftover."""
    below = leftovers.descendants(os.getpid(), spare={tree.pid})
    assert tree.pid not in below
    assert not set(leftovers.descendants(tree.pid)) & set(below)
