"""Sample inputs shared by the unit tests of the lifecycle and its consumers."""

from datetime import UTC, datetime

from workgate.core import lifecycle as lc

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
BUILD = """
apiVersion: shipwright.io/v1beta1
kind: Build
metadata:
  name: hello
spec:
  source: {type: Git, git: {url: https://example.invalid/repo}}
  strategy: {name: buildah, kind: ClusterBuildStrategy}
  output: {image: registry.invalid/hello:latest}
"""
POLICY = lc.Policy(identity="op", backoff_cap_seconds=1000)
