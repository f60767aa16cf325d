"""Each check of bench/chaos_checks.py fails on the evidence broken code would leave."""

from __future__ import annotations

from bench.chaos_checks import Execution, Expected, Verdict, judge

OK = {"phase": "SUCCEEDED", "attempt": 2}


def run(
    wo: str, attempt: int, start: float, end: float | None, ok: bool | None = True
) -> Execution:
    return Execution(wo, attempt, start, end, ok, who=f"{wo}/{attempt}/{start}")


def verdict(
    *executions: Execution, final: dict[str, object] | None = None, **kw: object
) -> Verdict:
    args: dict[str, object] = {
        "expected": {"a": Expected("SUCCEEDED")},
        "final": {"a": final or OK},
        "executions": list(executions),
        "retry_after": {("a", 1): 10.0},
        "max_retries": 2,
        "longest": 1.0,
        "orphans": [],
        **kw,
    }
    return judge(**args)  # type: ignore[arg-type]


def test_a_clean_run_has_no_violations() -> None:
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), run("a", 2, 10.0, 11.0))
    assert v.violations == [] and v.executions == 2 and v.retries == 1 and v.max_overlap == 1


def test_overlapping_executions() -> None:
    v = verdict(run("a", 1, 0.0, 12.0, ok=False), run("a", 2, 10.0, 11.0))
    assert v.max_overlap == 2 and any("2 executions at once" in x for x in v.violations)
    # An execution that logged no end counts as running for `longest` seconds.
    v = verdict(run("a", 1, 9.5, None, ok=None), run("a", 2, 10.0, 11.0))
    assert v.max_overlap == 2


def test_a_retry_before_its_next_retry_after() -> None:
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), run("a", 2, 9.0, 9.5))
    assert any("before its nextRetryAfter" in x for x in v.violations)
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), run("a", 2, 10.0, 11.0), retry_after={})
    assert v.violations == [] and v.unverified_retries == 1


def test_too_many_attempts_and_an_attempt_run_twice() -> None:
    retries = {("a", n): 0.0 for n in range(1, 5)}
    runs = [run("a", n, 2.0 * n, 2.0 * n + 1, ok=n == 4) for n in range(1, 5)]
    v = verdict(*runs, final={"phase": "SUCCEEDED", "attempt": 4}, retry_after=retries)
    assert any("more than maxRetries+1" in x for x in v.violations)
    assert any("status.attempt 4" in x for x in v.violations)
    v = verdict(run("a", 2, 10.0, 11.0, ok=False), run("a", 2, 12.0, 13.0))
    assert any("attempt 2 executed 2 times" in x for x in v.violations)


def test_wrong_outcome_success_without_execution_and_orphans() -> None:
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), final={"phase": "FAILED", "attempt": 1})
    assert any("expected SUCCEEDED" in x for x in v.violations)
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), final={"phase": "SUCCEEDED", "attempt": 1})
    assert any("which no execution completed" in x for x in v.violations)
    v = verdict(
        run("a", 1, 0.0, 1.0),
        final={"phase": "FAILED", "lastErrorReason": "CommandFailed", "attempt": 1},
        expected={"a": Expected("FAILED", "Rejected")},
    )
    assert any("expected FAILED (Rejected)" in x for x in v.violations)
    v = verdict(run("a", 1, 0.0, 1.0), final={"phase": "SUCCEEDED", "attempt": 1},
                orphans=["leases/a-claim"])  # fmt: skip
    assert v.violations == ["left without an owner: leases/a-claim"]


def test_a_work_order_that_always_fails_must_use_every_attempt() -> None:
    expected = {"a": Expected("FAILED", attempts=3)}
    v = verdict(run("a", 1, 0.0, 1.0, ok=False), expected=expected,
                final={"phase": "FAILED", "attempt": 1})  # fmt: skip
    assert v.violations == ["a: ended at attempt 1, expected 3"]
