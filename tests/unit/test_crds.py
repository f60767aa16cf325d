"""The CRDs in crds/ are generated from the Pydantic models and must not drift."""

from pathlib import Path
from typing import Any

import pytest

from workgate.api import crdgen

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models() -> None:
    assert crdgen.drifted(CRD_DIR) == [], "run `workgate crds` and commit crds/"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.extend(_walk(node["items"], f"{path}[]"))
    return found


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_documented(kind: crdgen.Kind) -> None:
    schema = crdgen.build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node, f"{path} has no type"
        if path.startswith((".spec", ".status")):
            assert node.get("description") or path.endswith("[]"), f"{path} has no description"


def test_drift_is_detected(tmp_path: Path) -> None:
    crdgen.write_all(tmp_path)
    assert crdgen.drifted(tmp_path) == []
    victim = tmp_path / crdgen.crd_filename(crdgen.KINDS[0])
    victim.write_text(victim.read_text().replace("maxLength: 63", "maxLength: 64", 1))
    assert crdgen.drifted(tmp_path) == [victim.name]
