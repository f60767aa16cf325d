"""Operator configuration, from flags or WORKGATE_* environment variables."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from workgate.core.lifecycle import Policy
from workgate.core.manifests import DEFAULT_ALLOWED_KINDS


def _csv(value: str) -> frozenset[str]:
    return frozenset(item.strip() for item in value.split(",") if item.strip())


def _kinds(value: str) -> frozenset[tuple[str, str]]:
    """`shipwright.io/v1beta1/Build,...` -> {("shipwright.io/v1beta1", "Build"), ...}."""
    kinds = set()
    for item in _csv(value):
        api_version, _, kind = item.rpartition("/")
        if not api_version or not kind:
            raise ValueError(f"allowed kind {item!r} is not apiVersion/Kind")
        kinds.add((api_version, kind))
    return frozenset(kinds)


def _limits(value: str) -> tuple[tuple[str, int], ...]:
    """`build=2,backup=5` -> (("backup", 5), ("build", 2))."""
    limits = {}
    for item in _csv(value):
        work_type, _, number = item.partition("=")
        if not work_type or not number.isdigit() or int(number) < 1:
            raise ValueError(f"concurrency limit {item!r} is not WORKTYPE=N (N >= 1)")
        limits[work_type.strip()] = int(number)
    return tuple(sorted(limits.items()))


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _flag(value: str) -> bool:
    return value.lower() not in ("off", "false", "0", "no", "")


def _port_or_off(value: str) -> int | None:
    return None if value.lower() in ("off", "none", "") else int(value)


def _algorithm(value: str) -> str:
    if value not in ("sha256", "sha1"):
        raise ValueError(f"WORKGATE_TOKEN_ALGORITHM must be sha256 or sha1, not {value!r}")
    return value


def _batch_seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        raise ValueError(f"{name} must be a number of seconds from 0 to 10, not {raw!r}")
    return value


def _workers(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 1024:
        raise ValueError(f"{name} must be a whole number from 1 to 1024, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class OperatorConfig:
    identity: str = field(default_factory=lambda: f"workgate-operator/{socket.gethostname()}")
    local_work_types: frozenset[str] = frozenset({"build"})
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED_KINDS
    backoff_cap_seconds: float = 3600.0
    jitter: float = 0.0
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    # ttlSecondsAfterFinished of WorkOrders that set none (None: kept until deleted).
    default_ttl_seconds: int | None = None
    # Per-work-type concurrency limits, the platform team's (not each author's): at most
    # this many WorkOrders of the type hold a slot (PENDING or CLAIMED) at a time.
    concurrency_limits: tuple[tuple[str, int], ...] = ()
    # How long a WorkOrder's first status may wait for what would make it one write
    # instead of two (core/lifecycle_hold.py); 0: written at once.
    status_batch_seconds: float = 1.0
    # The Lease (in operator_namespace) of the one replica that admits queued work.
    admission_lease: str = "workgate-queue-admission"
    operator_namespace: str = "workgate-system"  # where the token-minting key Secret lives
    token_algorithm: str = "sha256"  # or sha1, for compatibility with the source format
    token_key_refresh_seconds: float = 60.0  # re-read the key ring (after a rotation)
    # With the webhook off, identities (Signal senders, WorkOrder creators) are believed only
    # when this MutatingAdmissionPolicy, bound by this binding, records them (see deploy/).
    identity_policy: str = "workgate-identity"
    identity_policy_binding: str = "workgate-identity"
    webhook: bool = True
    webhook_addr: str = "127.0.0.1"
    webhook_port: int = 9443
    webhook_host: str | None = None  # the name the API server calls; default: webhook_addr
    webhook_cert_dir: str | None = None  # tls.crt, tls.key (+ ca.crt) from cert-manager
    webhook_config_name: str = "workgate.io"
    webhook_service: str | None = None  # "namespace/name:port": in-cluster, via a Service
    # Secret (in operator_namespace) holding the serving certificate every replica shares;
    # the first replica to start creates it. None: each process signs its own.
    webhook_cert_secret: str | None = None
    metrics_port: int | None = 9090  # None: no metrics endpoint
    liveness_endpoint: str | None = None  # e.g. http://0.0.0.0:8080/healthz (Kopf's probe)
    workers: int = 8
    # Waitpoint reconciles mostly wait on the API server (a SubjectAccessReview, then
    # status writes), each key by one worker at a time: enough of them for a burst of
    # signals to many gates (bench/lifecycle_bench.py, 50 signals/s) not to queue up.
    waitpoint_workers: int = 32
    # The user name the API server authenticates the operator as: the holder of the
    # claims it makes and the one identity besides a holder that may change a claim.
    # Learned at start-up (SelfSubjectReview) unless set.
    claimant: str | None = None
    # Remove the webhook configuration when the operator stops (the embedded control
    # plane's `workgate up`); a real deployment keeps it, failing closed.
    webhook_cleanup: bool = False

    @property
    def policy(self) -> Policy:
        return Policy(
            identity=self.claimant or self.identity,
            local_work_types=self.local_work_types,
            allowed_kinds=self.allowed_kinds,
            backoff_cap_seconds=self.backoff_cap_seconds,
            jitter=self.jitter,
            default_ttl_seconds=self.default_ttl_seconds,
            concurrency_limits=self.concurrency_limits,
            status_batch_seconds=self.status_batch_seconds,
            # 0 s batching writes every status at once, an unclaimed WorkOrder's too
            pending_status_seconds=(
                Policy.pending_status_seconds if self.status_batch_seconds else 0.0
            ),
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        default = cls()
        return cls(
            identity=env.get("WORKGATE_IDENTITY", default.identity),
            local_work_types=_csv(env["WORKGATE_LOCAL_WORK_TYPES"])
            if "WORKGATE_LOCAL_WORK_TYPES" in env
            else default.local_work_types,
            allowed_kinds=_kinds(env["WORKGATE_ALLOWED_KINDS"])
            if env.get("WORKGATE_ALLOWED_KINDS")
            else default.allowed_kinds,
            backoff_cap_seconds=float(
                env.get("WORKGATE_BACKOFF_CAP_SECONDS", default.backoff_cap_seconds)
            ),
            jitter=float(env.get("WORKGATE_BACKOFF_JITTER", default.jitter)),
            namespaces=tuple(sorted(_csv(env.get("WORKGATE_NAMESPACES", "")))),
            default_ttl_seconds=_optional_int(env.get("WORKGATE_TTL_SECONDS_AFTER_FINISHED")),
            concurrency_limits=_limits(env.get("WORKGATE_CONCURRENCY_LIMITS", "")),
            status_batch_seconds=_batch_seconds(
                env, "WORKGATE_STATUS_BATCH_SECONDS", default.status_batch_seconds
            ),
            admission_lease=env.get("WORKGATE_ADMISSION_LEASE", default.admission_lease),
            workers=_workers(env, "WORKGATE_WORKERS", default.workers),
            waitpoint_workers=_workers(
                env, "WORKGATE_WAITPOINT_WORKERS", default.waitpoint_workers
            ),
            operator_namespace=env.get("WORKGATE_OPERATOR_NAMESPACE", default.operator_namespace),
            token_algorithm=_algorithm(
                env.get("WORKGATE_TOKEN_ALGORITHM", default.token_algorithm)
            ),
            token_key_refresh_seconds=float(
                env.get("WORKGATE_TOKEN_KEY_REFRESH_SECONDS", default.token_key_refresh_seconds)
            ),
            identity_policy=env.get("WORKGATE_IDENTITY_POLICY", default.identity_policy),
            identity_policy_binding=env.get(
                "WORKGATE_IDENTITY_POLICY_BINDING", default.identity_policy_binding
            ),
            webhook=env.get("WORKGATE_WEBHOOK", "on").lower() not in ("off", "false", "0", "no"),
            webhook_addr=env.get("WORKGATE_WEBHOOK_ADDR", default.webhook_addr),
            webhook_port=int(env.get("WORKGATE_WEBHOOK_PORT", default.webhook_port)),
            webhook_host=env.get("WORKGATE_WEBHOOK_HOST") or None,
            webhook_cert_dir=env.get("WORKGATE_WEBHOOK_CERT_DIR") or None,
            webhook_config_name=env.get("WORKGATE_WEBHOOK_CONFIG", default.webhook_config_name),
            webhook_service=env.get("WORKGATE_WEBHOOK_SERVICE") or None,
            webhook_cert_secret=env.get("WORKGATE_WEBHOOK_CERT_SECRET") or None,
            metrics_port=_port_or_off(env.get("WORKGATE_METRICS_PORT", str(default.metrics_port))),
            liveness_endpoint=env.get("WORKGATE_LIVENESS_ENDPOINT") or None,
            claimant=env.get("WORKGATE_CLAIMANT") or None,
            webhook_cleanup=_flag(env.get("WORKGATE_WEBHOOK_CLEANUP", "off")),
        )
