"""The `workgate` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workgate.cli.agent import add_agent_parser

# The generated CRDs, and their copy inside the kustomize tree (kustomize will not load
# files from outside its root).
CRD_DIRS = ("crds", "deploy/crds")


def _cmd_crds(args: argparse.Namespace) -> int:
    from workgate.api import crdgen

    directories = [Path(d) for d in args.dir or CRD_DIRS]
    if args.check:
        drifted = [
            directory / name for directory in directories for name in crdgen.drifted(directory)
        ]
        for path in drifted:
            print(f"{path} differs from the models: run `workgate crds`", file=sys.stderr)
        return 1 if drifted else 0
    for directory in directories:
        for path in crdgen.write_all(directory):
            print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from workgate.cli.up import run_operator_until_stopped

    return run_operator_until_stopped(args.log_level, args.log_format)


def build_parser(lean: bool = False) -> argparse.ArgumentParser:
    """All commands; with `lean`, only the agent's, whose process imports none of the
    operator (no Kopf, no models): an agent stays small."""
    parser = argparse.ArgumentParser(prog="workgate", description=__doc__)
    if lean:
        add_agent_parser(parser.add_subparsers(dest="command", required=True))
        return parser
    from workgate.cli.dev import add_dev_parser
    from workgate.cli.tokenkey import add_token_key_parser
    from workgate.cli.up import add_up_parser

    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the configured cluster")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default=None,
        choices=["text", "json"],
        help="log format (default: $WORKGATE_LOG_FORMAT or text)",
    )
    run.set_defaults(func=_cmd_run)

    add_up_parser(sub)
    add_agent_parser(sub)
    add_dev_parser(sub)
    add_token_key_parser(sub)

    crds = sub.add_parser("crds", help="generate the CRD YAML from the API models")
    crds.add_argument(
        "--dir",
        action="append",
        help=f"output directory, repeatable (default: {' and '.join(CRD_DIRS)})",
    )
    crds.add_argument(
        "--check", action="store_true", help="fail if the files differ from the models"
    )
    crds.set_defaults(func=_cmd_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(lean=argv[:1] == ["agent"]).parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
