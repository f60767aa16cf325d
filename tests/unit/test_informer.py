"""The informer's re-list: what vanished while it was not watching is reported DELETED."""

from workgate.k8s.informer import Informer, strip


def obj(name: str, uid: str, **spec: object) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid,
                         "managedFields": [{"big": "x"}]}, "spec": spec}  # fmt: skip


def recording(seen: list[tuple[str, str, str]]) -> Informer:
    """An informer that appends (type, name, uid) of each event it delivers to `seen`."""

    def record(type_: str, body: dict[str, object]) -> None:
        meta = body["metadata"]
        assert isinstance(meta, dict)
        seen.append((type_, meta["name"], meta["uid"]))

    return Informer(None, "/x", record)  # type: ignore[arg-type]


def test_a_relist_reports_vanished_and_replaced_objects_as_deleted() -> None:
    seen: list[tuple[str, str, str]] = []
    informer = recording(seen)
    informer._relisted([strip(obj("a", "1")), strip(obj("b", "2")), strip(obj("c", "3"))])
    assert seen == [("ADDED", "a", "1"), ("ADDED", "b", "2"), ("ADDED", "c", "3")]
    seen.clear()
    # meanwhile: b deleted, c deleted and re-created under a new uid, d created
    informer._relisted([strip(obj("a", "1")), strip(obj("c", "9")), strip(obj("d", "4"))])
    assert sorted(seen) == sorted(
        [
            ("DELETED", "b", "2"),
            ("DELETED", "c", "3"),
            ("MODIFIED", "a", "1"),
            ("ADDED", "c", "9"),
            ("ADDED", "d", "4"),
        ]
    )
    assert set(informer._known) == {("ns", "a"), ("ns", "c"), ("ns", "d")}


def test_bodies_are_delivered_without_managed_fields_and_stubs_stay_small() -> None:
    got: list[dict[str, object]] = []
    informer = Informer(None, "/x", lambda _t, b: got.append(b))  # type: ignore[arg-type]
    informer._relisted([strip(obj("a", "1", workType="build", yamlContent="x" * 1000))])
    meta = got[0]["metadata"]
    assert isinstance(meta, dict) and "managedFields" not in meta
    assert informer.stub(("ns", "a")) == {
        "metadata": {"namespace": "ns", "name": "a", "uid": "1", "ownerReferences": []}
    }


def test_a_stub_keeps_the_controller_and_the_asked_spec_fields_only() -> None:
    got: list[tuple[str, dict[str, object]]] = []
    informer = Informer(
        None,  # type: ignore[arg-type]
        "/x",
        lambda t, b: got.append((t, b)),
        keep_spec=("workType", "absent"),
    )
    body = obj("a", "1", workType="build", yamlContent="x" * 1000)
    owner = {"apiVersion": "workgate.io/v1alpha1", "kind": "WorkOrder", "name": "wo",
             "uid": "u", "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "c1"}
    body["metadata"]["ownerReferences"] = [other, owner]  # type: ignore[index]
    informer._relisted([strip(body)])
    informer._relisted([])  # gone meanwhile: DELETED with what was kept
    kind, deleted = got[-1]
    assert kind == "DELETED"
    assert deleted == {
        "metadata": {"namespace": "ns", "name": "a", "uid": "1", "ownerReferences": [
            {k: v for k, v in owner.items() if k != "blockOwnerDeletion"}]},
        "spec": {"workType": "build"},
    }  # fmt: skip
    assert informer.stub(("ns", "a")) is None


def test_a_paged_relist_reports_what_vanished_only_after_its_last_page() -> None:
    seen: list[tuple[str, str, str]] = []
    informer = recording(seen)
    informer._relisted([strip(obj(n, n.upper())) for n in "abcd"])
    seen.clear()
    listed: dict[tuple[str, str], str] = {}
    informer._relisted_page([strip(obj("a", "A")), strip(obj("b", "new"))], listed)
    # a namesake under a new uid: the old one DELETED first; nothing else deleted yet
    assert seen == [("MODIFIED", "a", "A"), ("DELETED", "b", "B"), ("ADDED", "b", "new")]
    seen.clear()
    informer._relisted_page([strip(obj("d", "D")), strip(obj("e", "E"))], listed)
    assert seen == [("MODIFIED", "d", "D"), ("ADDED", "e", "E")]
    seen.clear()
    informer._relisted_end(listed)
    assert seen == [("DELETED", "c", "C")]
    assert set(informer._known) == {("ns", k) for k in "abde"}
