"""The caches' records of Leases and BuildRuns: small, and read exactly as whole bodies."""

from datetime import UTC, datetime
from typing import Any

from workgate.core.claims import ANNOTATION_RESULT, ANNOTATION_REVOKED, LeaseView
from workgate.k8s import owners, shipwright
from workgate.k8s.claims import build_lease
from workgate.operator.cache import GONE_REMEMBERED, ObjectCache
from workgate.operator.records import (
    LAST_APPLIED,
    build_run_record,
    lease_record,
    workorder_record,
)

WORKORDER = {
    "metadata": {"namespace": "ns", "name": "wo", "uid": "u-1", "generation": 1},
    "spec": {"workType": "build"},
}


def served(body: dict[str, Any], version: str) -> dict[str, Any]:
    """As the API server returns it: uid, version, managedFields, more labels."""
    meta = body["metadata"]
    meta.update(uid=f"{meta['name']}-uid", resourceVersion=version,
                creationTimestamp="2026-01-01T00:00:00Z",
                managedFields=[{"manager": "workgate", "fieldsV1": {"f:spec": {}}}])  # fmt: skip
    meta.setdefault("labels", {})["team"] = "a"
    meta.setdefault("annotations", {})["note"] = "x" * 500
    return body


def test_a_lease_record_reads_as_the_lease_and_keeps_nothing_else() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    body = served(
        build_lease(WORKORDER, "wo-claim", attempt=2, holder="agent", duration_seconds=60,
                    now=now, instance="pod-1"), "7")  # fmt: skip
    body["metadata"]["annotations"].update({ANNOTATION_RESULT: "Failed", ANNOTATION_REVOKED: "X"})
    record = lease_record(body)
    assert LeaseView.from_body(record) == LeaseView.from_body(body)
    assert LeaseView.from_body(record).attempt == 2 and LeaseView.from_body(record).revoked == "X"
    assert owners.controlled_by(record, "u-1") and not owners.controlled_by(record, "u-2")
    assert owners.workgate_owner(record) == owners.workgate_owner(body) == ("wo", "u-1")
    meta = record["metadata"]
    assert "labels" not in meta and "managedFields" not in meta
    assert "note" not in meta["annotations"]
    assert len(repr(record)) < len(repr(body)) / 2


def test_a_build_run_record_reads_as_the_build_run() -> None:
    body = served(
        {"metadata": {"namespace": "ns", "name": "wo-a1",
                      "ownerReferences": [owners.owner_reference(WORKORDER)]},
         "spec": shipwright.build_run_spec(WORKORDER, "wo-a1", "wo", 1)["spec"]}, "9")  # fmt: skip
    assert shipwright.build_run_view(build_run_record(body)) == shipwright.build_run_view(body)
    body["spec"]["state"] = shipwright.BUILDRUN_CANCELED
    body["status"] = {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Succeeded", "status": "False", "reason": "Failed", "message": "boom",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
        "buildSpec": {"big": "x" * 1000},
    }  # fmt: skip
    record = build_run_record(body)
    view = shipwright.build_run_view(record)
    assert view == shipwright.build_run_view(body) and view.cancelled and view.message == "boom"
    assert owners.controlled_by(record, "u-1")
    assert record["metadata"]["resourceVersion"] == "9" and "buildSpec" not in record["status"]


def test_a_build_run_record_keeps_the_mark_of_an_attempts_second_build_run() -> None:
    spec = shipwright.build_run_spec(WORKORDER, "wo-a1", "wo", 1, recreated_after="BuildNotFound")
    body = served({**spec, "metadata": {**spec["metadata"], "namespace": "ns"}}, "4")
    view = shipwright.build_run_view(build_run_record(body))
    assert view.recreated and view.uid == "wo-a1-uid"
    first = served(shipwright.build_run_spec(WORKORDER, "wo-a1", "wo", 1), "5")
    assert not shipwright.build_run_view(build_run_record(first)).recreated


def test_a_workorder_record_drops_only_managed_fields_and_kubectls_copy() -> None:
    body = served({**WORKORDER, "metadata": dict(WORKORDER["metadata"])}, "3")
    body["metadata"]["annotations"][LAST_APPLIED] = "{...}"
    record = workorder_record(body)
    assert "managedFields" not in record["metadata"]
    assert record["metadata"]["annotations"] == {"note": "x" * 500}
    assert {**record["metadata"], "managedFields": body["metadata"]["managedFields"],
            "annotations": body["metadata"]["annotations"]} == body["metadata"]  # fmt: skip
    assert record["spec"] == body["spec"]


def test_the_cache_keeps_records_and_still_orders_versions() -> None:
    cache: ObjectCache[str] = ObjectCache(lease_record)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    newer = served(build_lease(WORKORDER, "c", attempt=1, holder="a", duration_seconds=9,
                               now=now), "12")  # fmt: skip
    older = served(build_lease(WORKORDER, "c", attempt=1, holder="b", duration_seconds=9,
                               now=now), "11")  # fmt: skip
    cache.observe("k", newer)
    cache.observe("k", older)
    kept = cache.get("k")
    assert kept is not None and kept == lease_record(newer) and "labels" not in kept["metadata"]


def test_a_write_answer_that_comes_after_the_delete_brings_no_ghost_back() -> None:
    """The operator revokes a claim; its agent releases the Lease at once, and the DELETED
    event overtakes the answer to the revocation. Recording that answer would keep a
    revoked Lease in the cache that no event ever removes (the WorkOrder then waits for
    it to go stale: an hour at the default claimTimeoutSeconds)."""
    cache: ObjectCache[str] = ObjectCache(lease_record)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    claim = build_lease(WORKORDER, "c", attempt=1, holder="a", duration_seconds=9, now=now)
    cache.observe("k", served(claim, "11"))
    cache.deleted("k", served(claim, "13"))  # the agent released it
    cache.observe("k", served(claim, "12"))  # the answer to the revocation, late
    assert cache.get("k") is None
    again = served(build_lease(WORKORDER, "c", attempt=2, holder="a", duration_seconds=9,
                               now=now), "14")  # fmt: skip
    again["metadata"]["uid"] = "a-new-claim"
    cache.observe("k", again)  # a new claim under the same name is seen
    assert cache.get("k") is not None
    for i in range(GONE_REMEMBERED + 10):  # what is remembered of deletions is bounded
        cache.forget(f"k{i}", f"uid-{i}")
    assert len(cache._gone) == GONE_REMEMBERED


def test_workorder_records_read_as_the_body_and_share_their_condition_words() -> None:
    def finished(name: str) -> dict[str, Any]:
        condition = {"type": "Ready", "status": "True", "reason": "Succeeded",
                     "message": "".join(["succeeded on ", "attempt 1"]),
                     "lastTransitionTime": "2026-01-01T00:00:00.000Z"}  # fmt: skip
        return served(
            {"apiVersion": "workgate.io/v1alpha1", "kind": "WorkOrder",
             "metadata": {"namespace": "ns", "name": name}, "spec": {"workType": "build"},
             "status": {"phase": "SUCCEEDED", "conditions": [condition]}}, "5")  # fmt: skip

    a, b = finished("a"), finished("b")
    assert a["status"]["conditions"][0]["message"] is not b["status"]["conditions"][0]["message"]
    ra, rb = workorder_record(a), workorder_record(b)
    assert ra["status"] == a["status"] and ra["spec"] == a["spec"]
    assert ra["status"]["conditions"][0]["message"] is rb["status"]["conditions"][0]["message"]
