"""Pure parts of the embedded plane's add-ons: pins, cache keys, kwok stages, node readiness,
stop order, the bare setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workgate.devcluster import build, kwok
from workgate.devcluster.addons import node_problems
from workgate.devcluster.components import (
    Component,
    components,
    shipwright_version,
    tekton_version,
)
from workgate.devcluster.controlplane import bare_from_env
from workgate.devcluster.processes import ADDON_PROCESSES, CORE_PROCESSES, stop_tiers
from workgate.devcluster.upstream import serve_one_version


def test_shipwright_is_pinned_and_tekton_follows_its_go_mod() -> None:
    assert shipwright_version() == "v0.19.2"
    assert tekton_version() == "v1.9.1"


def test_every_component_has_its_own_cache_key() -> None:
    keys = [c.key for c in components()]
    assert len(set(keys)) == len(keys) == 4
    assert [c.binary for c in components()] == list(ADDON_PROCESSES)
    assert "kube-scheduler-v1.36.3-" in keys[0]  # the Kubernetes build module's digest follows
    assert keys[1] == "kwok-v0.8.0"
    assert keys[2] == "tekton-pipelines-controller-v1.9.1"


def test_a_changed_build_module_changes_the_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "mine"
    module.mkdir()
    (module / "go.mod").write_text("module x\n")
    (module / "main.go").write_text("package main\n")
    monkeypatch.setattr(build, "GOMOD_DIR", tmp_path)
    component = Component("mine", "example.com/x", "v1.0.0", ".", gomod="mine")
    before = component.key
    assert before.startswith("mine-v1.0.0-")
    (module / "main.go").write_text("package main // changed\n")
    assert component.key != before
    assert Component("up", "example.com/up", "v1.0.0", "./cmd/up").key == "up-v1.0.0"


def _crd(*versions: tuple[str, bool]) -> dict[str, Any]:
    return {
        "metadata": {"name": "taskruns.tekton.dev"},
        "spec": {
            "conversion": {"strategy": "Webhook"},
            "versions": [{"name": n, "served": True, "storage": s} for n, s in versions],
        },
    }


def test_crds_keep_their_storage_version_by_default() -> None:
    crd = serve_one_version(_crd(("v1beta1", False), ("v1", True)))
    assert crd["spec"]["versions"] == [{"name": "v1", "served": True, "storage": True}]
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    with pytest.raises(ValueError, match="no storage version"):
        serve_one_version(_crd(("v1", False)))


OWNER = ".metadata.ownerReferences.[].kind"


def _stage(name: str, expressions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"matchExpressions": expressions}}}


def test_pod_complete_also_takes_taskrun_pods_but_not_those_marked_to_fail() -> None:
    stage = kwok.complete_taskrun_pods(
        _stage("pod-complete", [{"key": OWNER, "operator": "In", "values": ["Job"]}])
    )
    expressions = stage["spec"]["selector"]["matchExpressions"]
    assert expressions[0]["values"] == ["Job", "TaskRun"]
    assert {
        "key": f'.metadata.annotations["{kwok.FAIL_ANNOTATION}"]',
        "operator": "DoesNotExist",
    } in expressions
    delay = stage["spec"]["delay"]["durationFrom"]["expressionFrom"]
    assert delay == f'.metadata.annotations["{kwok.COMPLETE_DELAY_ANNOTATION}"]'
    with pytest.raises(ValueError, match="no single"):
        kwok.complete_taskrun_pods(_stage("pod-complete", []))


def test_the_failure_stage_is_chosen_by_annotation() -> None:
    label = f'.metadata.labels["{kwok.FAIL_ANNOTATION}"]'
    stage = kwok.fail_on_annotation(
        _stage("failed", [{"key": label, "operator": "In", "values": ["true"]}])
    )
    key = stage["spec"]["selector"]["matchExpressions"][0]["key"]
    assert key == f'.metadata.annotations["{kwok.FAIL_ANNOTATION}"]'
    with pytest.raises(ValueError, match="not chosen by the label"):
        kwok.fail_on_annotation(_stage("failed", []))


def test_node_problems() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node_problems(ready) == []
    assert node_problems({}) == ["not Ready"]
    tainted = {**ready, "spec": {"taints": [{"key": "node.kubernetes.io/not-ready"}]}}
    assert node_problems(tainted) == ["tainted node.kubernetes.io/not-ready"]


def test_stop_order_is_add_ons_then_api_server_and_controller_manager_then_etcd() -> None:
    tiers = stop_tiers([*CORE_PROCESSES, *ADDON_PROCESSES])
    assert tiers == [
        list(ADDON_PROCESSES),
        ["kube-apiserver", "kube-controller-manager"],
        ["etcd"],
    ]
    assert stop_tiers(CORE_PROCESSES)[0] == []


def test_bare_setting() -> None:
    assert bare_from_env({"WORKGATE_DEV_BARE": "1"})
    assert bare_from_env({"WORKGATE_DEV_BARE": "true"})
    assert not bare_from_env({"WORKGATE_DEV_BARE": "0"})
    assert not bare_from_env({})
