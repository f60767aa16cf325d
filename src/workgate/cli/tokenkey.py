"""`workgate token-key`: rotate the operator's token-minting key without breaking open gates.

    workgate token-key rotate   add a new key and make it current (older keys stay)
    workgate token-key list     key ids, the current one marked
    workgate token-key prune    drop keys that no open waitpoint was minted with

Run with credentials that may get and update the Secret workgate-token-key in the
operator's namespace (an administrator). Operators mint with the new key within
WORKGATE_TOKEN_KEY_REFRESH_SECONDS (60 s) and verify each waitpoint with the key that
minted its token (status.tokenKeyId), so open gates keep working with their original
tokens. Prune only after that interval has passed since the last rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from workgate.k8s import tokenkeys
from workgate.k8s.api import ApiError, KubeApi


async def _run(args: argparse.Namespace) -> int:
    async with KubeApi() as api:
        try:
            if args.action == "rotate":
                key_id = await tokenkeys.rotate(api, args.namespace)
                print(f"token key {key_id} is now current; open gates keep their own keys")
            elif args.action == "list":
                ring = await tokenkeys.describe(api, args.namespace)
                for key_id in sorted(ring.keys):
                    mark = " (current)" if key_id == ring.current else ""
                    print(f"{key_id or '(legacy)'}{mark}")
            else:
                used = await tokenkeys.keys_in_use(api)
                dropped = await tokenkeys.prune(api, args.namespace, used)
                print(f"dropped: {', '.join(k or '(legacy)' for k in dropped) or 'nothing'}")
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
    return 0


def add_token_key_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "token-key",
        help="rotate, list or prune the operator's token-minting keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["rotate", "list", "prune"])
    parser.add_argument(
        "--namespace", default="workgate-system", help="the operator's namespace (its key Secret)"
    )
    parser.set_defaults(func=lambda args: asyncio.run(_run(args)))
