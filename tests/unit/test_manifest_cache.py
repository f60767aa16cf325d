"""parse_build_work remembers its results: the same text parses once, the cache is bounded,
and libyaml's loader (when present) reads exactly what the pure-Python one reads."""

from __future__ import annotations

import pytest
import yaml

from workgate.core import manifests
from workgate.core.manifests import ManifestError, parse_build_work

BUILD = "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: {n}\nspec: {{}}\n"


def test_same_text_parses_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = manifests._load_all
    monkeypatch.setattr(manifests, "_load_all", lambda text: calls.append(text) or real(text))
    text = BUILD.format(n="cached-once")
    first = parse_build_work(text, namespace="team")
    second = parse_build_work(text, namespace="team")
    assert first == second and len(calls) == 1
    parse_build_work(text, namespace="other")  # another namespace: another result
    assert len(calls) == 2
    assert parse_build_work(text, namespace="other")[1].body["metadata"]["namespace"] == "other"


def test_failures_are_remembered_and_raised_each_time() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
    for _ in range(2):
        with pytest.raises(ManifestError) as err:
            parse_build_work(text, namespace="team")
        assert err.value.reason == "ForbiddenKind"


def test_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = manifests._ParseCache(max_entries=3, max_text_bytes=100)
    error = ManifestError("X", "y")
    for index in range(5):
        cache.put(index, 10, error)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) is error
    cache.put("big", 95, error)
    assert len(cache) == 1 and cache.get("big") is error
    cache.put("too-big", 101, error)
    assert cache.get("too-big") is None


@pytest.mark.parametrize(
    "text",
    [
        BUILD.format(n="b"),
        "a: 1\n---\nb: [1, 2, {c: d}]\n---\n",
        "x: 'quoted: *not-an-alias'\ny: !!str 3\nz: 2026-01-01\n",
        "k: |\n  line one\n  line two\nn: null\nt: true\nf: 1.5e3\n",
    ],
)
def test_fast_loader_reads_what_the_safe_loader_reads(text: str) -> None:
    expected = [d for d in yaml.load_all(text, Loader=manifests._NoAliasLoader) if d is not None]
    assert manifests._load_all(text) == expected


def test_aliases_are_refused_whichever_loader() -> None:
    with pytest.raises(ManifestError, match="aliases"):
        manifests.parse_documents("a: &x [1]\nb: *x\n")
