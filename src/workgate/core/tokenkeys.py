"""The operator's token-minting keys: a ring of keys with ids, one of them current.

Kept in one Secret (`workgate-token-key` in the operator's namespace):

    current       the id of the key new waitpoints are minted with
    key-<id>      a 32-byte key, one entry per id still in use
    key           (older installations) the key of id "" (tokens without an id)

A waitpoint records the id of the key that minted its token (`status.tokenKeyId`) and the
token starts with it, so rotating (adding a key and making it current) leaves every open
gate verifiable with its own key. Pure functions over the Secret's `data`.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

CURRENT = "current"
PREFIX = "key-"
LEGACY = "key"
KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


class KeyRingError(ValueError):
    pass


@dataclass(frozen=True)
class KeyRing:
    keys: Mapping[str, bytes]
    current: str

    def key(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_key_id(now: datetime) -> str:
    """Sortable in creation order and readable in an audit: `20260101t120000123456-3fa9`
    (to the microsecond, so two keys of one second sort by time, not by their random
    suffix; ids of the older form, to the second, sort before those of their second)."""
    return f"{now:%Y%m%dt%H%M%S%f}-{secrets.token_hex(2)}"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def initial_data(key_id: str, key: bytes) -> dict[str, str]:
    return {CURRENT: _b64(key_id.encode()), f"{PREFIX}{key_id}": _b64(key)}


def parse(data: Mapping[str, str]) -> KeyRing:
    """The key ring in a Secret's `data` (base64 values)."""
    keys: dict[str, bytes] = {}
    for name, value in data.items():
        if name == LEGACY:
            keys[""] = base64.b64decode(value)
        elif name.startswith(PREFIX):
            keys[name[len(PREFIX) :]] = base64.b64decode(value)
    current = base64.b64decode(data[CURRENT]).decode() if CURRENT in data else ""
    if current not in keys:
        raise KeyRingError(f"the current token key {current!r} is not in the key Secret")
    if any(len(k) < 16 for k in keys.values()):
        raise KeyRingError("a token key is shorter than 16 bytes")
    return KeyRing(keys, current)


def rotated(data: Mapping[str, str], key_id: str, key: bytes) -> dict[str, str]:
    """`data` with a new key that becomes current; every older key stays."""
    if not KEY_ID_PATTERN.match(key_id):
        raise KeyRingError(f"key id {key_id!r} must match {KEY_ID_PATTERN.pattern}")
    if f"{PREFIX}{key_id}" in data:
        raise KeyRingError(f"key id {key_id!r} exists already")
    parse(data)  # refuse to rotate a ring that does not parse
    return {**data, f"{PREFIX}{key_id}": _b64(key), CURRENT: _b64(key_id.encode())}


def pruned(data: Mapping[str, str], in_use: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """`data` without the keys no open waitpoint uses (the current key always stays)."""
    ring = parse(data)
    keep = {*in_use, ring.current}
    dropped = sorted(k for k in ring.keys if k not in keep)
    names = {(LEGACY if k == "" else f"{PREFIX}{k}") for k in dropped}
    return {n: v for n, v in data.items() if n not in names}, dropped
