"""workgate: a Kubernetes work queue with human approval gates."""

__version__ = "0.1.0"
