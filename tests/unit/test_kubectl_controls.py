"""`kubectl workgate cancel|suspend|resume|retry`: what each writes, refuses and waits for."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from workgate.api.wire import ANNOTATION_RERUN
from workgate.cli import kubectl_controls as kc
from workgate.cli.kubectl_plugin import build_parser


def wo(phase: str | None = None, generation: int = 3, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "w", "namespace": "ns", "generation": generation,
                     "resourceVersion": "42"},
        "spec": {"workType": "test", **spec},
    }  # fmt: skip
    if phase:
        body["status"] = {"phase": phase, "observedGeneration": generation}
    return body


def with_status(body: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {**body, "status": {**(body.get("status") or {}), **status}}


# --- cancel ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "PENDING", "CLAIMED", "WAITING", "QUEUED", "SUSPENDED"])
def test_cancel_sets_spec_cancel_and_waits_for_cancelled(phase: str | None) -> None:
    plan = kc.plan_cancel(wo(phase))
    assert plan.patch == {"spec": {"cancel": True}}
    assert not plan.done(wo(phase), {})
    assert plan.done(wo("CANCELLED"), {})


@pytest.mark.parametrize("phase", ["SUCCEEDED", "FAILED"])
def test_cancel_refuses_a_finished_workorder(phase: str) -> None:
    with pytest.raises(kc.Refused, match=f"is {phase}: finished, nothing to cancel"):
        kc.plan_cancel(wo(phase))


def test_cancelling_a_cancelled_workorder_writes_nothing() -> None:
    plan = kc.plan_cancel(wo("CANCELLED", cancel=True))
    assert plan.patch is None
    assert plan.notes == ("workorder.workgate.io/w is already CANCELLED",)


# --- suspend / resume -----------------------------------------------------------------


def test_suspend_waits_until_the_operator_saw_the_new_generation() -> None:
    plan = kc.plan_suspend(wo("PENDING"), True)
    assert plan.patch == {"spec": {"suspend": True}}
    patched = wo("PENDING", generation=4, suspend=True)  # what the patch returned
    assert not plan.done(wo("PENDING", generation=4) | {"status": {"observedGeneration": 3}},
                         patched)  # fmt: skip
    # An attempt running when it was suspended runs on: seen is enough, not SUSPENDED.
    assert plan.done(with_status(wo("CLAIMED", generation=4), observedGeneration=4), patched)


def test_resume_clears_spec_suspend() -> None:
    plan = kc.plan_suspend(wo("SUSPENDED", suspend=True), False)
    assert plan.patch == {"spec": {"suspend": False}}


def test_suspend_and_resume_are_idempotent() -> None:
    assert kc.plan_suspend(wo("SUSPENDED", suspend=True), True).patch is None
    plan = kc.plan_suspend(wo("PENDING"), False)
    assert plan.patch is None and plan.notes == (
        "workorder.workgate.io/w is already not suspended",
    )


@pytest.mark.parametrize("phase", ["SUCCEEDED", "FAILED", "CANCELLED"])
def test_suspend_refuses_a_finished_workorder(phase: str) -> None:
    with pytest.raises(kc.Refused, match="nothing to suspend"):
        kc.plan_suspend(wo(phase), True)


# --- retry ----------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["FAILED", "CANCELLED"])
def test_retry_sets_a_rerun_annotation_conditioned_on_what_it_judged(phase: str) -> None:
    plan = kc.plan_retry(wo(phase), "v1")
    assert plan.patch == {
        "metadata": {"resourceVersion": "42", "annotations": {ANNOTATION_RERUN: "v1"}}
    }
    assert plan.notes == ()
    assert not plan.done(wo(phase), {})
    assert plan.done(wo("PENDING"), {})
    assert plan.done(wo("CLAIMED"), {})
    # A rerun that failed again before we looked has still left the old run.
    assert plan.done(with_status(wo("FAILED"), rerun="v1"), {})
    assert not plan.done(with_status(wo("FAILED"), rerun="v0"), {})


def test_retry_of_a_cancelled_workorder_also_clears_spec_cancel_and_says_so() -> None:
    plan = kc.plan_retry(wo("CANCELLED", cancel=True), "v2")
    assert plan.patch is not None
    assert plan.patch["spec"] == {"cancel": False}
    assert plan.patch["metadata"]["annotations"] == {ANNOTATION_RERUN: "v2"}
    (note,) = plan.notes
    assert "spec.cancel was true; set it to false" in note


@pytest.mark.parametrize("phase", [None, "PENDING", "CLAIMED", "SUCCEEDED", "SUSPENDED"])
def test_retry_refuses_unless_failed_or_cancelled(phase: str | None) -> None:
    shown = phase or "not started"
    with pytest.raises(kc.Refused, match=f"is {shown}: only a FAILED or CANCELLED"):
        kc.plan_retry(wo(phase), "v")


def test_rerun_values_are_fresh_and_fit_an_annotation() -> None:
    moment = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    values = {kc.new_rerun_value(moment) for _ in range(100)}
    assert len(values) == 100
    for value in values:
        assert re.fullmatch(r"20260101T120000Z-[0-9a-f]{8}", value), value


# --- output and wiring ----------------------------------------------------------------


def test_describe_says_where_it_stands() -> None:
    body = with_status(wo("QUEUED"), attempt=2, queue={"position": 3, "reason": "ConcurrencyLimit"})
    assert kc.describe(body) == "workorder.workgate.io/w QUEUED, attempt 2, queue position 3"
    failed = with_status(wo("FAILED"), attempt=1, lastErrorReason="X", lastError="boom")
    assert kc.describe(failed) == "workorder.workgate.io/w FAILED, attempt 1, last error X: boom"
    assert kc.describe(wo()) == "workorder.workgate.io/w (no status yet)"


@pytest.mark.parametrize(
    ("argv", "timeout"),
    [
        (["cancel", "w", "-n", "ns"], 60.0),
        (["suspend", "w", "-n", "ns"], 10.0),
        (["resume", "w", "-n", "ns"], 10.0),
        (["retry", "w", "-n", "ns", "--timeout", "5"], 5.0),
    ],
)
def test_the_plugin_parses_the_controls(argv: list[str], timeout: float) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.workorder, args.namespace) == (argv[0], "w", "ns")
    assert args.timeout == timeout and not args.no_wait
    assert args.func is kc.run_control
