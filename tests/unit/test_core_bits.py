"""Backoff math, naming, claims and manifest policing."""

from datetime import UTC, datetime

import pytest

from workgate.core.backoff import backoff_seconds, next_retry_time
from workgate.core.claims import LeaseView, micro_time
from workgate.core.manifests import ManifestError, parse_build_work, parse_documents
from workgate.core.naming import build_run_name, child_name, is_dns_subdomain, label_value


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_seconds(60, n, 600) for n in range(6)] == [60, 120, 240, 480, 600, 600]
    assert backoff_seconds(60, 10_000, 600) == 600  # no giant integers
    assert backoff_seconds(60, 1, 600, jitter=0.5, random_value=0.5) == 90


def test_backoff_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        backoff_seconds(60, -1, 600)
    with pytest.raises(ValueError):
        backoff_seconds(60, 1, 600, jitter=2)


def test_next_retry_time_rounds_up_to_the_millisecond() -> None:
    at = next_retry_time(datetime(2026, 1, 1, tzinfo=UTC), 0.0001)
    assert at.microsecond == 1000


def test_micro_time_has_six_fraction_digits() -> None:
    assert micro_time(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC)) == "2026-01-01T00:00:00.000005Z"


def test_lease_view_reads_annotations() -> None:
    view = LeaseView.from_body(
        {
            "metadata": {
                "name": "x",
                "resourceVersion": "3",
                "uid": "u",
                "annotations": {
                    "workgate.io/attempt": "2",
                    "workgate.io/result": "Failed",
                    "workgate.io/error": "boom",
                },
            },
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 5,
                "renewTime": "2026-01-01T00:00:00.000000Z",
            },
        }
    )
    assert view.attempt == 2 and view.outcome == "Failed" and view.error == "boom"
    assert view.is_stale(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC))
    assert not view.is_stale(datetime(2026, 1, 1, 0, 0, 4, tzinfo=UTC))


def test_child_names_are_deterministic_and_valid() -> None:
    long = "x" * 80
    assert build_run_name("wo", 3) == "wo-a3"
    assert build_run_name(long, 3) == build_run_name(long, 3)
    assert len(build_run_name(long, 3)) <= 63 and is_dns_subdomain(build_run_name(long, 3))
    assert child_name("a.b", "c") != child_name("a-b", "c")
    assert len(label_value("y" * 200)) <= 63


BUILD = "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: b\nspec: {}\n"


def test_parse_build_work_confines_namespace() -> None:
    objects, build = parse_build_work(BUILD, namespace="team")
    assert build.name == "b" and objects[0].body["metadata"]["namespace"] == "team"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: &x [1]\nb: *x\n", "InvalidYAML"),
        ("x" * (256 * 1024 + 1), "PayloadTooLarge"),
        ("---\n", "InvalidManifest"),
        ("- 1\n- 2\n", "InvalidManifest"),
        ("a: " + "[" * 100 + "]" * 100, "InvalidManifest"),
        ("\n---\n".join([BUILD] * 17), "InvalidManifest"),
    ],
)
def test_hostile_yaml_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_build_work(text, namespace="team")
    assert err.value.reason == reason


def test_metadata_beyond_names_labels_annotations_is_refused() -> None:
    text = BUILD.replace("  name: b\n", "  name: b\n  ownerReferences: []\n")
    with pytest.raises(ManifestError, match="ownerReferences"):
        parse_build_work(text, namespace="team")


def test_exactly_one_build() -> None:
    with pytest.raises(ManifestError, match="exactly one"):
        parse_build_work(BUILD + "---\n" + BUILD.replace("name: b", "name: c"), namespace="t")
    assert len(parse_documents(BUILD + "---\n")) == 1


def test_condition_transition_time_moves_only_when_status_changes() -> None:
    from workgate.api.common import ConditionStatus
    from workgate.core.conditions import get_condition, set_condition

    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    conds = set_condition([], "Ready", ConditionStatus.FALSE, "Queued", "", generation=1, now=t0)
    conds = set_condition(
        conds, "Ready", ConditionStatus.FALSE, "Claimed", "m", generation=2, now=t1
    )
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.last_transition_time == t0 and ready.reason == "Claimed"
    assert ready.observed_generation == 2 and len(conds) == 1
    conds = set_condition(
        conds, "Ready", ConditionStatus.TRUE, "Succeeded", "", generation=2, now=t1
    )
    assert get_condition(conds, "Ready").last_transition_time == t1  # type: ignore[union-attr]
