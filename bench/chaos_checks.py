"""What a chaos run must show, judged from evidence gathered outside the operator: the work's
own log of its executions (agents) and the stand-in Shipwright's record of each BuildRun it
ran, the WorkOrders as a watch saw them, and what is left in the namespace at the end.

Pure functions over plain data, so that each check can be shown to fail
(tests/unit/test_chaos_checks.py) and the harness (bench/chaos.py) only gathers.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Execution:
    """One run of one attempt of one WorkOrder, as the executor itself recorded it
    (wall-clock seconds; `end` None if it never recorded an end)."""

    workorder: str
    attempt: int
    start: float
    end: float | None
    ok: bool | None  # None: no outcome (terminated, or killed with its agent)
    who: str  # pid, or BuildRun uid


@dataclass(frozen=True)
class Expected:
    phase: str  # SUCCEEDED or FAILED
    reason: str | None = None  # lastErrorReason required, if any
    attempts: int | None = None  # the attempt it must end at (status.attempt), if any


@dataclass
class Verdict:
    executions: int = 0
    retries: int = 0  # attempts beyond the first, by the executions seen
    max_overlap: int = 0  # most executions of one WorkOrder at one moment
    violations: list[str] = field(default_factory=list)
    unverified_retries: int = 0  # retries whose nextRetryAfter the watch never showed


def overlap(executions: list[Execution], longest: float) -> int:
    """Most executions running at one moment (an execution without an end ran at most
    `longest` seconds: the work sleeps for a planned time and ends)."""
    points: list[tuple[float, int]] = []
    for e in executions:
        end = e.end if e.end is not None else e.start + longest
        points += [(e.start, 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start
        running += delta
        peak = max(peak, running)
    return peak


def judge(
    *,
    expected: Mapping[str, Expected],
    final: Mapping[str, Mapping[str, object]],
    executions: Iterable[Execution],
    retry_after: Mapping[tuple[str, int], float],
    max_retries: int,
    longest: float,
    orphans: Iterable[str],
) -> Verdict:
    """`final`: each WorkOrder's last status; `retry_after[(wo, n)]`: the nextRetryAfter the
    watch saw recorded for retry n (wall-clock seconds); `orphans`: children left without
    a living owner."""
    verdict = Verdict()
    by_wo: dict[str, list[Execution]] = defaultdict(list)
    for e in executions:
        by_wo[e.workorder].append(e)
        verdict.executions += 1
    for name, want in sorted(expected.items()):
        status = final.get(name) or {}
        phase, reason = status.get("phase"), status.get("lastErrorReason")
        if phase != want.phase or (want.reason is not None and reason != want.reason):
            verdict.violations.append(
                f"{name}: ended {phase} ({reason}), expected {want.phase} ({want.reason})"
            )
        runs = sorted(by_wo.get(name, []), key=lambda e: e.start)
        attempts = {e.attempt for e in runs}
        verdict.retries += max(attempts, default=1) - 1
        recorded = status.get("attempt")
        if want.attempts is not None and recorded != want.attempts:
            verdict.violations.append(
                f"{name}: ended at attempt {recorded}, expected {want.attempts}"
            )
        if max(attempts, default=0) > max_retries + 1:
            verdict.violations.append(
                f"{name}: attempt {max(attempts)} executed, more than maxRetries+1 = "
                f"{max_retries + 1}"
            )
        if isinstance(recorded, int) and recorded > max_retries + 1:
            verdict.violations.append(f"{name}: status.attempt {recorded} > {max_retries + 1}")
        if phase == "SUCCEEDED" and not any(e.ok and e.attempt == recorded for e in runs):
            verdict.violations.append(
                f"{name}: SUCCEEDED at attempt {recorded}, which no execution completed"
            )
        for attempt, group in itertools.groupby(sorted(runs, key=lambda e: e.attempt),
                                                key=lambda e: e.attempt):  # fmt: skip
            twice = list(group)
            if len(twice) > 1:
                verdict.violations.append(
                    f"{name}: attempt {attempt} executed {len(twice)} times "
                    f"({', '.join(e.who for e in twice)})"
                )
        peak = overlap(runs, longest)
        verdict.max_overlap = max(verdict.max_overlap, peak)
        if peak > 1:
            verdict.violations.append(f"{name}: {peak} executions at once: {runs}")
        for e in runs:
            if e.attempt < 2:
                continue
            due = retry_after.get((name, e.attempt - 1))
            if due is None:
                verdict.unverified_retries += 1
            elif e.start < due:
                verdict.violations.append(
                    f"{name}: attempt {e.attempt} started at {e.start:.3f}, "
                    f"{due - e.start:.3f}s before its nextRetryAfter {due:.3f}"
                )
    for orphan in orphans:
        verdict.violations.append(f"left without an owner: {orphan}")
    return verdict
