"""Chaos with nothing lost, the CI-sized run of bench/chaos.py (its harness, imported): 100
WorkOrders, one seed, on a bare control plane of the test's own (the test kills its API
server, so it never shares one), while operator replicas and agents are SIGKILLed every
1-5 s and the API server twice. The properties are judged by bench/chaos_checks.py from
the work's own log and the stand-in Shipwright's record; tests/unit/test_chaos_checks.py
shows each check failing on the evidence broken code would leave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.chaos import Settings, api_config, run_seed

from workgate.devcluster.build import Binaries
from workgate.devcluster.controlplane import LocalControlPlane
from workgate.k8s.api import KubeApi

pytestmark = pytest.mark.integration
WORKORDERS = 100
SEED = 7


@pytest.fixture
def chaos_plane(control_plane_binaries: Binaries, tmp_path: Path) -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(
        "chaos-test", state_dir=tmp_path / "plane", binaries=control_plane_binaries, bare=True
    )
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


async def test_chaos_loses_nothing_and_runs_nothing_twice(
    chaos_plane: LocalControlPlane, tmp_path: Path
) -> None:
    settings = Settings(workorders=WORKORDERS, bound=240)
    async with KubeApi(api_config(chaos_plane)) as api:
        outcome = await run_seed(chaos_plane, api, SEED, settings, tmp_path / "run")
    print(outcome.line())
    verdict = outcome.verdict
    # Every WorkOrder terminal within the bound with its expected outcome, no overlap, no
    # attempt run twice, no early retry, at most maxRetries+1 attempts, no Lease, Secret or
    # Waitpoint without an owner.
    assert outcome.violations == [], "\n".join(outcome.violations)
    assert verdict.max_overlap == 1
    # ...and the chaos did happen: without it the above proves little.
    assert outcome.kills["apiserver"] == 2
    assert outcome.kills["operator"] >= 3 and outcome.kills["agent"] >= 3, outcome.kills
    assert outcome.signals["approve"] > 0 and outcome.signals["reject"] > 0, outcome.signals
    assert verdict.retries > 0
    assert verdict.executions >= WORKORDERS * 0.9  # all but the rejected-before-execution
