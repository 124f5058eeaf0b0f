"""The `fsck` and `gc` subcommands of `storj-registry`, on the bucket the REGISTRY_* settings name."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from app.settings import load_settings
from app.storage import StorageFault, open_storage
from app.tools.fsck import fsck
from app.tools.gc import DEFAULT_GRACE_SECONDS, gc

EXIT_PROBLEMS = 1
EXIT_STORAGE = 3


def run_fsck(args: argparse.Namespace) -> int:
    report = fsck(open_storage(load_settings()), repair=args.repair)
    return EXIT_PROBLEMS if report.left else 0


def run_gc(args: argparse.Namespace) -> int:
    gc(open_storage(load_settings()), delete=args.delete, grace_seconds=args.grace_seconds)
    return 0


Handler = Callable[[argparse.Namespace], int]


def storage_faults_exit(handler: Handler) -> Handler:
    """An unreachable bucket ends a tool with a one-line message and exit status 3, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except StorageFault as exc:
            print(f"storj-registry {args.command}: the bucket is unavailable: {exc}", file=sys.stderr)
            return EXIT_STORAGE

    return run


def add_tool_commands(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "fsck",
        help="check the bucket against the layout's invariants (exit 1 while problems remain)",
        description="Problems go to stdout, one per line: PROBLEM <code> <key> <detail>. Progress and summary: stderr.",
    )
    check.add_argument("--repair", action="store_true", help="fix what the bucket itself can tell (never blobs)")
    check.set_defaults(handler=storage_faults_exit(run_fsck))

    collect = commands.add_parser(
        "gc",
        help="find blobs and manifests nothing references (dry run unless --delete)",
        description="Per repository; each finding is a line on stdout, progress and summary go to stderr.",
    )
    collect.add_argument("--delete", action="store_true", help="delete what is found (default: only report)")
    collect.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help=f"keep objects modified this recently: pushes in progress (default {DEFAULT_GRACE_SECONDS})",
    )
    collect.set_defaults(handler=storage_faults_exit(run_gc))
