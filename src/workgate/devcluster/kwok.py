"""kwok: simulated nodes, and stages that take the pods scheduled to them through their lives.

The stages are the pinned release's own (`kustomize/stage`), with two changes:

- `pod-complete` also completes Pods owned by TaskRuns (upstream: Jobs only), after the
  delay in the Pod's `pod-complete.stage.kwok.x-k8s.io/delay` annotation (default none);
- `pod-container-running-failed` (a chaos stage) is chosen by an *annotation* of that name
  rather than a label, because Shipwright passes a build strategy's annotations (not its
  labels) on to the TaskRun, and Tekton on to the Pod. Its `.../reason`, `.../message`,
  `.../exit-code` and `.../delay` annotations shape the failure; pod-complete leaves such
  Pods alone.

So a BuildStrategy annotated `pod-container-running-failed.stage.kwok.x-k8s.io: "true"` makes
every build with it fail through the real Pod, TaskRun and BuildRun.
"""

from __future__ import annotations

from pathlib import Path

from workgate.devcluster.build import module_source
from workgate.devcluster.components import KWOK_MODULE, KWOK_VERSION
from workgate.devcluster.upstream import Document, load_documents

NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAIL_ANNOTATION = "pod-container-running-failed.stage.kwok.x-k8s.io"
COMPLETE_DELAY_ANNOTATION = "pod-complete.stage.kwok.x-k8s.io/delay"
NODE_LEASE_SECONDS = 40
STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
)
_OWNER_KIND = ".metadata.ownerReferences.[].kind"


def module_dir(version: str = KWOK_VERSION) -> Path:
    return module_source(KWOK_MODULE, version)


def stages(version: str = KWOK_VERSION) -> list[Document]:
    root = module_dir(version) / "kustomize" / "stage"
    result = []
    for name in STAGE_FILES:
        for stage in load_documents(root / name):
            match stage["metadata"]["name"]:
                case "pod-complete":
                    stage = complete_taskrun_pods(stage)
                case "pod-container-running-failed":
                    stage = fail_on_annotation(stage)
            result.append(stage)
    return result


def complete_taskrun_pods(stage: Document) -> Document:
    expressions = stage["spec"]["selector"]["matchExpressions"]
    owners = [e for e in expressions if e["key"] == _OWNER_KIND]
    if len(owners) != 1:
        raise ValueError(f"pod-complete has no single {_OWNER_KIND} selector: {expressions}")
    owners[0]["values"] = [*owners[0]["values"], "TaskRun"]
    expressions.append({"key": _annotation(FAIL_ANNOTATION), "operator": "DoesNotExist"})
    stage["spec"]["delay"] = {
        "durationMilliseconds": 0,
        "durationFrom": {"expressionFrom": _annotation(COMPLETE_DELAY_ANNOTATION)},
    }
    return stage


def fail_on_annotation(stage: Document) -> Document:
    expressions = stage["spec"]["selector"]["matchExpressions"]
    label = f'.metadata.labels["{FAIL_ANNOTATION}"]'
    chosen = [e for e in expressions if e["key"] == label]
    if len(chosen) != 1:
        raise ValueError(f"{stage['metadata']['name']} is not chosen by the label {label}")
    chosen[0]["key"] = _annotation(FAIL_ANNOTATION)
    return stage


def _annotation(name: str) -> str:
    return f'.metadata.annotations["{name}"]'


def node(name: str) -> Document:
    """A node kwok manages (its status comes from the node-initialize stage)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }


def args(kubeconfig: Path, config: Path, server_address: str) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
        "--cidr=10.244.0.0/16",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--server-address={server_address}",
    ]
