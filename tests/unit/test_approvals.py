"""Who may decide a waitpoint, quorum, rejection, closing, and token keys, without a cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.samples import NOW
from workgate.api.waitpoint import (
    ApprovalRules,
    CloseReason,
    ReceivedSignal,
    Rejection,
    WaitpointSpec,
    WaitpointStatus,
)
from workgate.api.workorder import Gate
from workgate.core import approvals, tokenkeys
from workgate.core import signals as rules
from workgate.core.approvals import Sender, Vote
from workgate.core.waitpoints import settle


def spec(**kw: object) -> WaitpointSpec:
    base: dict[str, object] = {"workOrderName": "wo", "key": "k", "requiredSignalNames": ["ok"]}
    return WaitpointSpec.model_validate({**base, **kw})


def judge(
    s: WaitpointSpec,
    user: str = "alice",
    groups: tuple[str, ...] = (),
    *,
    name: str = "ok",
    votes: tuple[Vote, ...] = (),
    author: str | None = "bob",
) -> rules.Refusal | None:
    verdict = approvals.judge_sender(
        s,
        namespace="ns",
        waitpoint="wo-k",
        required_signal_names=s.required_signal_names,
        sender=Sender(user, groups),
        author=author,
        signal_name=name,
        votes=list(votes),
    )
    assert verdict is None or verdict[1]  # every refusal explains itself
    return None if verdict is None else verdict[0]


def test_named_approvers_are_rbac_subjects() -> None:
    s = spec(
        approvers=[
            {"kind": "User", "name": "carol"},
            {"kind": "Group", "name": "release"},
            {"kind": "ServiceAccount", "name": "bot"},  # in the waitpoint's namespace
            {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"},
        ]
    )
    assert judge(s, "carol") is None
    assert judge(s, "dave", ("system:authenticated", "release")) is None
    assert judge(s, "system:serviceaccount:ns:bot") is None
    assert judge(s, "system:serviceaccount:tools:ci") is None
    assert judge(s, "system:serviceaccount:other:bot") == rules.Refusal.NOT_AN_APPROVER
    assert judge(s, "release") == rules.Refusal.NOT_AN_APPROVER  # a user named like the group
    assert judge(spec(), "anyone") is None  # no list: RBAC alone decides


def test_self_approval() -> None:
    strict = spec(forbidSelfApproval=True)
    assert judge(strict, "bob", author="bob") == rules.Refusal.SELF_APPROVAL
    assert judge(strict, "bob", name="reject", author="bob") == rules.Refusal.SELF_APPROVAL
    assert judge(strict, "alice", author=None) == rules.Refusal.AUTHOR_UNKNOWN
    assert judge(strict, "alice", author="bob") is None
    assert judge(spec(), "bob", author="bob") is None  # allowed where not forbidden


def test_declared_gates_forbid_self_approval_by_default() -> None:
    gate = Gate.model_validate({"key": "g", "stage": "BeforeExecution"})
    assert gate.forbid_self_approval
    assert not spec().forbid_self_approval  # a Waitpoint's own default (Dynamic ones)
    assert approvals.rules_key(gate) != approvals.rules_key(spec())


def test_quorum_counts_distinct_senders_once_per_name() -> None:
    s = spec(requiredSignalNames=["ok", "qa"], requiredApprovals=2)
    votes = (Vote("ok", "alice"),)
    assert judge(s, "alice", votes=votes) == rules.Refusal.ALREADY_COUNTED
    assert judge(s, "alice", name="qa", votes=votes) is None  # another name: counts there
    assert judge(s, "carol", votes=votes) is None
    full = (*votes, Vote("ok", "carol"))
    assert judge(s, "dave", votes=full) == rules.Refusal.ALREADY_SATISFIED
    tallies = approvals.tally(s, s.required_signal_names, full)
    assert [(t.name, t.approved_by, t.remaining) for t in tallies] == [
        ("ok", ["alice", "carol"], 0),
        ("qa", [], 2),
    ]
    assert not approvals.is_approved(tallies)
    both = (*full, Vote("qa", "dave"), Vote("qa", "erin"))
    assert approvals.is_approved(approvals.tally(s, s.required_signal_names, both))


def test_wildcard_quorum_counts_senders_of_any_name_but_not_rejections() -> None:
    s = spec(requiredSignalNames=[], requiredApprovals=2)
    votes = (Vote("lgtm", "alice"),)
    assert judge(s, "alice", name="other", votes=votes) == rules.Refusal.ALREADY_COUNTED
    [t] = approvals.tally(s, [], (*votes, Vote("reject", "carol")))
    assert t.name == "*" and t.approved_by == ["alice"] and t.remaining == 1


def test_a_rejection_ends_the_vote() -> None:
    s = spec()
    votes = (Vote("reject", "carol"),)
    assert approvals.rejection(s, votes) == Vote("reject", "carol")
    assert judge(s, "alice", votes=votes) == rules.Refusal.ALREADY_REJECTED
    assert judge(s, "alice", name="reject") is None
    custom = spec(rejectSignalName="veto")
    assert approvals.rejection(custom, votes) is None


def test_waiting_for_says_what_and_whom() -> None:
    s = spec(
        requiredApprovals=2,
        approvers=[{"kind": "Group", "name": "release"}],
        forbidSelfApproval=True,
    )
    tallies = approvals.tally(s, s.required_signal_names, (Vote("ok", "alice"),))
    assert approvals.waiting_for(s, tallies) == (
        "ok: 1 more (approved: alice); from Group release; not the author"
    )


def test_senders_groups_must_be_exactly_the_users() -> None:
    assert approvals.same_groups("a,b", ["b", "a"])
    assert not approvals.same_groups("a", ["a", "b"])
    assert not approvals.same_groups("a,b,admins", ["a", "b"])
    assert approvals.parse_groups(" a, ,b ") == ("a", "b")


def test_identity_records_are_believed_only_behind_admission() -> None:
    assert approvals.identity_trusted(webhook=True, created=None, policy_bound_at=None)
    assert not approvals.identity_trusted(webhook=False, created=NOW, policy_bound_at=None)
    early = NOW + approvals.POLICY_SETTLE - timedelta(seconds=1)
    assert not approvals.identity_trusted(webhook=False, created=early, policy_bound_at=NOW)
    late = NOW + approvals.POLICY_SETTLE
    assert approvals.identity_trusted(webhook=False, created=late, policy_bound_at=NOW)


def received(name: str, sender: str) -> ReceivedSignal:
    return ReceivedSignal(
        name=name,
        signal=f"s-{sender}",
        sender=sender,
        received_at=NOW,
        payload_digest="d",
        nonce=f"n-{sender}-{name}",
    )


def test_settle_closes_on_quorum_only_once_active() -> None:
    s = spec(requiredApprovals=2)
    one = WaitpointStatus(state="active", received_signals=[received("ok", "alice")])
    out = settle(s, one, NOW, 1)
    assert out.status.state == "active" and out.status.waiting_for == "ok: 1 more (approved: alice)"
    ready = out.status.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "Waiting")
    two = one.model_copy(update={"received_signals": [*one.received_signals, received("ok", "c")]})
    done = settle(s, two, NOW, 1)
    assert done.status.close_reason == CloseReason.SATISFIED and done.status.waiting_for is None
    assert done.status.conditions[0].status == "True"
    assert done.events == [("Normal", "Satisfied", "approved by alice, c")]
    buffered = settle(s, two.model_copy(update={"state": "pending"}), NOW, 1)
    assert buffered.status.state == "pending" and buffered.status.conditions[0].reason == "Pending"


def test_settle_rejects_before_anything_else() -> None:
    s = spec(timeoutSeconds=1)
    no = Rejection(waitpoint="wo-k", signal="s-carol", by="carol", at=NOW, payload="nope")
    st = WaitpointStatus(
        state="active",
        expires_at=NOW - timedelta(seconds=1),
        received_signals=[received("ok", "alice"), received("reject", "carol")],
        rejection=no,
    )
    out = settle(s, st, NOW, 1)
    assert out.status.close_reason == CloseReason.REJECTED
    assert out.events == [("Warning", "Rejected", "rejected by carol: nope")]
    assert out.status.conditions[0].message == "rejected by carol"


def test_settle_expires_and_wakes_at_expiry() -> None:
    s = spec(timeoutSeconds=60)
    st = WaitpointStatus(state="active", expires_at=NOW + timedelta(seconds=60))
    assert settle(s, st, NOW, 1).wake_at == NOW + timedelta(seconds=60)
    expired = settle(s, st, NOW + timedelta(seconds=61), 1)
    assert expired.status.close_reason == CloseReason.EXPIRED


def test_the_spec_bounds_what_a_waitpoint_can_record() -> None:
    with pytest.raises(ValueError):
        ApprovalRules.model_validate({"requiredApprovals": 17})
    with pytest.raises(ValueError):
        WaitpointStatus.model_validate(
            {"receivedSignals": [received("ok", str(i)).to_wire() for i in range(66)]}
        )


def test_a_signals_recorded_sender_cannot_change_and_a_creator_is_stamped() -> None:
    import kopf

    from workgate.operator.approval_admission import sender_changed, stamp_creator

    def signal(**annotations: str) -> dict[str, object]:
        return {"metadata": {"annotations": annotations}}

    old = signal(**{"workgate.io/sender": "a", "workgate.io/sender-groups": "g"})
    assert (
        sender_changed(
            old, signal(**{"workgate.io/sender": "a", "workgate.io/sender-groups": "g", "x": "y"})
        )
        is None
    )
    assert sender_changed(
        old, signal(**{"workgate.io/sender": "a", "workgate.io/sender-groups": "g,admins"})
    )
    assert sender_changed(old, signal(**{"workgate.io/sender-groups": "g"}))

    created = kopf.Patch()
    stamp_creator("CREATE", None, {"username": "alice"}, created)  # type: ignore[typeddict-item]
    assert created == {"metadata": {"annotations": {"workgate.io/created-by": "alice"}}}
    kept = kopf.Patch()
    stamp_creator("UPDATE", {"metadata": {"annotations": {"workgate.io/created-by": "alice"}}},
                  {"username": "mallory"}, kept)  # type: ignore[typeddict-item]  # fmt: skip
    assert kept == {"metadata": {"annotations": {"workgate.io/created-by": "alice"}}}
    forged = kopf.Patch()
    stamp_creator("UPDATE", {"metadata": {}}, {"username": "mallory"}, forged)  # type: ignore[typeddict-item]
    assert forged == {"metadata": {"annotations": {"workgate.io/created-by": None}}}


# --- token keys -------------------------------------------------------------------------


def test_tokens_carry_the_id_of_the_key_that_minted_them() -> None:
    key = b"k" * 32
    legacy = rules.mint_token(key, "ns", "wp", "uid")
    token = rules.mint_token(key, "ns", "wp", "uid", key_id="20260101t000000-ab12")
    assert token == f"20260101t000000-ab12.{legacy}"
    assert rules.mint_token(b"x" * 32, "ns", "wp", "uid", key_id="a") != f"a.{legacy}"


def test_rotation_keeps_old_keys_and_pruning_keeps_keys_in_use() -> None:
    data = tokenkeys.initial_data("one", b"1" * 32)
    ring = tokenkeys.parse(data)
    assert ring.current == "one" and ring.current_key == b"1" * 32
    data = tokenkeys.rotated(data, "two", b"2" * 32)
    data = tokenkeys.rotated(data, "three", b"3" * 32)
    ring = tokenkeys.parse(data)
    assert ring.current == "three" and ring.key("one") == b"1" * 32
    with pytest.raises(tokenkeys.KeyRingError):
        tokenkeys.rotated(data, "two", b"4" * 32)  # ids are never reused
    with pytest.raises(tokenkeys.KeyRingError):
        tokenkeys.rotated(data, "Bad_Id", b"4" * 32)
    kept, dropped = tokenkeys.pruned(data, {"one"})
    assert dropped == ["two"] and set(tokenkeys.parse(kept).keys) == {"one", "three"}


def test_a_legacy_key_secret_is_a_ring_of_one() -> None:
    import base64

    data = {"key": base64.b64encode(b"L" * 32).decode()}
    ring = tokenkeys.parse(data)
    assert ring.current == "" and ring.key("") == b"L" * 32
    rotated = tokenkeys.parse(tokenkeys.rotated(data, "new", b"N" * 32))
    assert rotated.current == "new" and rotated.key("") == b"L" * 32
    with pytest.raises(tokenkeys.KeyRingError):
        tokenkeys.parse({**data, "current": base64.b64encode(b"missing").decode()})


def test_kubectl_workgate_approve_picks_the_signal_name_and_pending_says_who() -> None:
    from workgate.cli.kubectl_plugin import approve_signal_name, pending_rows

    def wp(required: list[str], status: dict[str, object] | None = None) -> dict[str, object]:
        return {
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"workOrderName": "wo", "requiredSignalNames": required},
            "status": status or {},
        }

    assert approve_signal_name(wp([]), None) == "approve"
    assert approve_signal_name(wp(["lgtm"]), None) == "lgtm"
    assert approve_signal_name(wp(["a", "b"]), "b") == "b"
    with pytest.raises(RuntimeError, match="choose one with --signal"):
        approve_signal_name(wp(["a", "b"]), None)
    status = {
        "state": "active",
        "waitingFor": "a: 1 more (approved: alice)",
        "approvals": [{"name": "a", "required": 2, "approvedBy": ["alice"], "remaining": 1}],
    }
    closed = {"state": "closed", "closeReason": "Rejected"}
    rows = pending_rows([wp(["a"], status), wp(["a"], closed)], namespaces=True, closed=False)
    assert rows[1:] == [("ns", "w", "wo", "active", "a: 1 more (approved: alice)", "a: alice", "-")]
    rows = pending_rows([wp(["a"], closed)], namespaces=False, closed=True)
    assert rows[1][2] == "closed (Rejected)"


def test_key_ids_sort_in_creation_order_within_one_second() -> None:
    """`token-key list` sorts by id: keys rotated in one second must not be ordered by
    their random suffix (a fresh-clone run once listed the newer key first)."""
    moments = [NOW + timedelta(microseconds=n) for n in range(0, 40, 2)]
    ids = [tokenkeys.new_key_id(moment) for moment in moments]
    assert sorted(ids) == ids
    assert all(tokenkeys.KEY_ID_PATTERN.match(key_id) for key_id in ids)
