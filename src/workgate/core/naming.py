"""Deterministic names for the children of a WorkOrder.

Re-running a step must find the object a previous run created, so names derive from the
WorkOrder's name and the attempt, never from randomness or time. Every mapping here is
injective: two different (WorkOrder, key) or (WorkOrder, attempt) pairs never share a
name (a suffix is parsed back unambiguously from the right; an over-long name keeps a
hash of everything it was made from). A name can still be squatted by a foreign object,
so children are recognised by their controller's uid, never by name alone.
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


def child_name(
    base: str, suffix: str, max_length: int = DNS_LABEL_MAX, separator: str = "-"
) -> str:
    """`base<separator>suffix`, or a truncated base plus a hash of the full base when too
    long (or, for a DNS label, when the base holds dots, which labels may not)."""
    plain = f"{base}{separator}{suffix}"
    if len(plain) <= max_length and (max_length > DNS_LABEL_MAX or "." not in plain):
        return plain
    room = max_length - len(suffix) - 9 - len(separator)  # "-" + 8 hash chars + separator
    head = base.replace(".", "-")[:room].rstrip("-")
    return f"{head}-{_digest(base + separator + suffix)}{separator}{suffix}"


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
    """`<workorder>.<key>`: gate keys hold no dots, so the last dot splits the name back
    into its two parts (`release.prod-approval` and `release-prod.approval` differ)."""
    return child_name(workorder, key, DNS_SUBDOMAIN_MAX, separator=".")


def token_secret_name(waitpoint: str) -> str:
    return child_name(waitpoint, "token", DNS_SUBDOMAIN_MAX)
