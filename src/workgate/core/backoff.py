"""Exponential retry backoff."""

from __future__ import annotations

import math
from datetime import datetime, timedelta


def backoff_seconds(
    base_seconds: int,
    retry_index: int,
    cap_seconds: float,
    *,
    jitter: float = 0.0,
    random_value: float = 0.0,
) -> float:
    """Delay before retry number `retry_index` (0 for the first retry).

    `min(base * 2^retry_index, cap)`, then shortened by up to `jitter` (a fraction in
    [0, 1]) times `random_value` (in [0, 1)), so jitter spreads retries out without ever
    exceeding the cap.
    """
    if base_seconds < 0 or retry_index < 0 or cap_seconds < 0:
        raise ValueError("backoff inputs must be non-negative")
    if not 0.0 <= jitter <= 1.0 or not 0.0 <= random_value <= 1.0:
        raise ValueError("jitter and random_value must be within [0, 1]")
    # Avoid building huge integers for large retry indexes: past the cap it is the cap.
    exponent_limit = math.log2(cap_seconds / base_seconds) if base_seconds and cap_seconds else 0
    delay = (
        cap_seconds
        if retry_index > exponent_limit
        else min(base_seconds * 2**retry_index, cap_seconds)
    )
    return float(delay) * (1.0 - jitter * random_value)


def next_retry_time(now: datetime, delay_seconds: float) -> datetime:
    """The retry time, rounded up to the millisecond the status can express."""
    at = now + timedelta(seconds=delay_seconds)
    remainder = at.microsecond % 1000
    if remainder:
        at += timedelta(microseconds=1000 - remainder)
    return at
