"""Operator configuration from the environment: a bad worker count is refused at start-up."""

import pytest

from workgate.operator.config import OperatorConfig


@pytest.mark.parametrize("raw", ["0", "-3", "many", "", "5000"])
@pytest.mark.parametrize("name", ["WORKGATE_WORKERS", "WORKGATE_WAITPOINT_WORKERS"])
def test_a_worker_count_outside_1_to_1024_is_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        OperatorConfig.from_env({name: raw})


def test_worker_counts_are_read() -> None:
    config = OperatorConfig.from_env({"WORKGATE_WORKERS": "3", "WORKGATE_WAITPOINT_WORKERS": "7"})
    assert (config.workers, config.waitpoint_workers) == (3, 7)


@pytest.mark.parametrize("raw", ["-1", "11", "soon", ""])
def test_a_status_batch_outside_0_to_10_seconds_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="WORKGATE_STATUS_BATCH_SECONDS"):
        OperatorConfig.from_env({"WORKGATE_STATUS_BATCH_SECONDS": raw})


def test_the_status_batch_reaches_the_policy_the_rules_read() -> None:
    assert OperatorConfig.from_env({}).policy.status_batch_seconds == 1.0
    assert OperatorConfig.from_env({}).policy.pending_status_seconds == 30.0
    config = OperatorConfig.from_env({"WORKGATE_STATUS_BATCH_SECONDS": "0"})
    assert config.policy.status_batch_seconds == 0.0
    assert config.policy.pending_status_seconds == 0.0  # 0: every status at once
