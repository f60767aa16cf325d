"""Pure rules of issue 8: injective names, fencing timings, who may write a claim, webhook
registration scope."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from workgate.core import claims as rules
from workgate.core.claims import ClaimTarget, Fencing, LeaseView, Outcome
from workgate.core.naming import build_run_name, is_dns_subdomain, waitpoint_name
from workgate.operator.webhooks import build_webhook_configurations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_waitpoint_names_are_injective() -> None:
    assert waitpoint_name("release", "prod-approval") != waitpoint_name("release-prod", "approval")
    assert waitpoint_name("release", "prod-approval") == "release.prod-approval"
    pairs = [
        (f"w{i}-x" * (i % 5 + 1), f"k{j}-y" * (j % 3 + 1)) for i in range(30) for j in range(9)
    ]
    names = {waitpoint_name(w, k) for w, k in pairs}
    assert len(names) == len(pairs)
    long = waitpoint_name("a" * 250, "key")
    assert len(long) <= 253 and is_dns_subdomain(long) and long.endswith(".key")
    assert long != waitpoint_name("a" * 249, "key")


def test_build_run_names_are_injective() -> None:
    names = {build_run_name(w, a) for w in ("x", "x-a1", "x-a", "y.z", "y-z") for a in (1, 11)}
    assert len(names) == 10
    assert all(len(n) <= 63 and "." not in n for n in names)


@pytest.mark.parametrize("duration", [1, 6, 60, 3600])
def test_fencing_stops_work_before_the_lease_can_go_stale(duration: int) -> None:
    fence = Fencing.for_duration(duration)
    assert fence.renew_every < fence.renew_deadline < duration
    assert fence.renew_deadline + fence.grace < duration
    assert fence.grace <= 30


def view(
    holder: str = "alice", attempt: int | None = 1, outcome: Outcome | None = None
) -> LeaseView:
    return LeaseView("wo-claim", holder, attempt, T0, T0, 60, "1", "u", outcome=outcome)


TARGET = ClaimTarget(True, True, "wo-claim", "lint", local=False)


def test_a_claim_is_created_only_in_ones_own_name_with_permission() -> None:
    judge = rules.judge_claim_create
    assert judge("wo-claim", view(), "alice", "op", TARGET, may_claim=True) is None
    assert "own user name" in (judge("wo-claim", view("bob"), "alice", "op", TARGET, True) or "")
    assert "may not claim" in (judge("wo-claim", view(), "alice", "op", TARGET, False) or "")
    assert "controller" in (judge("wo-claim", view(), "alice", "op", None, True) or "")
    gone = ClaimTarget(False, False, "wo-claim", "", local=False)
    assert "does not exist" in (judge("wo-claim", view(), "alice", "op", gone, True) or "")
    assert "named wo-claim" in (judge("x-claim", view(), "alice", "op", TARGET, True) or "")
    local = ClaimTarget(True, True, "wo-claim", "build", local=True)
    assert "run by the operator" in (judge("wo-claim", view(), "alice", "op", local, True) or "")
    assert judge("wo-claim", view("op"), "op", "op", local, False) is None
    reported = view(outcome=Outcome.SUCCEEDED)
    assert "outcome" in (judge("wo-claim", reported, "alice", "op", TARGET, True) or "")


def test_a_claim_is_for_the_current_attempt_only() -> None:
    """An agent whose view lags claims an attempt that is over (or not yet begun): refused,
    so no Lease names an attempt other than the stored one (the operator's own claims are
    judged by its status write instead: it may claim a rerun's attempt before writing it)."""
    judge = rules.judge_claim_create
    on_2 = ClaimTarget(True, True, "wo-claim", "lint", local=False, attempt=2)
    assert judge("wo-claim", view(attempt=2), "alice", "op", on_2, True) is None
    for attempt in (1, 3):
        refused = judge("wo-claim", view(attempt=attempt), "alice", "op", on_2, True) or ""
        assert "on attempt 2, not" in refused, refused
    assert judge("wo-claim", view("op", attempt=3), "op", "op", on_2, False) is None


def test_only_the_holder_or_the_operator_changes_a_claim() -> None:
    judge = rules.judge_claim_update
    assert judge(view(), view(), "alice", "op", same_owner=True) is None
    assert judge(view(), view(outcome=Outcome.FAILED), "alice", "op", same_owner=True) is None
    assert judge(view(), view(), "op", "op", same_owner=True) is None
    assert "holder" in (judge(view(), view(), "mallory", "op", same_owner=True) or "")
    assert "holderIdentity" in (judge(view(), view("bob"), "alice", "op", same_owner=True) or "")
    assert "attempt" in (judge(view(), view(attempt=2), "alice", "op", same_owner=True) or "")
    assert "owner" in (judge(view(), view(), "alice", "op", same_owner=False) or "")
    done = view(outcome=Outcome.SUCCEEDED)
    assert "outcome" in (judge(done, view(outcome=Outcome.FAILED), "alice", "op", True) or "")


def test_only_the_holder_the_operator_or_the_cluster_releases_a_claim() -> None:
    judge = rules.judge_claim_delete
    assert judge(view(), "alice", (), "op") is None
    assert judge(view(), "op", (), "op") is None
    assert (
        judge(view(), "system:serviceaccount:kube-system:generic-garbage-collector", (), "op")
        is None
    )
    assert judge(view(), "root", ("system:masters",), "op") is None
    assert "holder" in (judge(view(), "mallory", ("system:authenticated",), "op") or "")


def handler(id_: str, plural: str, group: str = "workgate.io", **labels: str) -> SimpleNamespace:
    return SimpleNamespace(
        id=id_,
        reason="validating",
        selector=SimpleNamespace(group=group, version="v1", plural=None, any_name=plural),
        operations=["CREATE"],
        labels=labels,
        side_effects=None,
        ignore_failures=None,
    )


def test_webhooks_are_scoped_to_the_operators_namespaces_and_objects() -> None:
    handlers = [
        handler("signals", "signals"),
        handler(
            "claims",
            "leases",
            "coordination.k8s.io",
            **{"app.kubernetes.io/managed-by": "workgate"},
        ),
    ]
    config = {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}
    scoped = build_webhook_configurations(handlers, config, "wg", ["team-b", "team-a"])
    webhooks = {w["name"]: w for w in scoped["validating"]["webhooks"]}
    assert set(webhooks) == {"signals.wg", "claims.wg"}
    for webhook in webhooks.values():
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    assert webhooks["claims.wg"]["objectSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "workgate"}
    }
    assert webhooks["claims.wg"]["clientConfig"]["url"] == "https://127.0.0.1:9443/claims"
    assert "objectSelector" not in webhooks["signals.wg"]
    clusterwide = build_webhook_configurations(handlers, config, "wg")
    assert all("namespaceSelector" not in w for w in clusterwide["validating"]["webhooks"])
    assert config == {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}  # not mutated
