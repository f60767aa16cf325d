"""workgate: a Kubernetes work queue with human approval gates."""
