"""Deterministic names for the children of a WorkOrder.

Re-running a step must find the object a previous run created, so names derive from the
WorkOrder's name and the attempt, never from randomness or time.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= DNS_SUBDOMAIN_MAX and bool(_SUBDOMAIN.match(name))


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(base: str, suffix: str, max_length: int = DNS_LABEL_MAX) -> str:
    """`base-suffix`, or a truncated base plus a hash of the full base when too long."""
    plain = f"{base}-{suffix}"
    if len(plain) <= max_length and "." not in base:
        return plain
    room = max_length - len(suffix) - 10  # "-" + 8 hash chars + "-"
    head = base.replace(".", "-")[:room].rstrip("-")
    return f"{head}-{_digest(base)}-{suffix}"


def label_value(name: str) -> str:
    """A label-safe stand-in for an object name (label values are at most 63 chars)."""
    if len(name) <= DNS_LABEL_MAX:
        return name
    return f"{name[: DNS_LABEL_MAX - 9].rstrip('-.')}-{_digest(name)}"


def lease_name(workorder: str) -> str:
    return child_name(workorder, "claim", DNS_SUBDOMAIN_MAX)


def build_run_name(workorder: str, attempt: int) -> str:
    return child_name(workorder, f"a{attempt}")


def waitpoint_name(workorder: str, key: str) -> str:
    return child_name(workorder, key, DNS_SUBDOMAIN_MAX)


def token_secret_name(waitpoint: str) -> str:
    return child_name(waitpoint, "token", DNS_SUBDOMAIN_MAX)
