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


def run_copy(args: argparse.Namespace) -> int:
    from app.mirror.commands import copy_command  # httpx and rich only for the commands that use them

    return copy_command(args)


def run_sync(args: argparse.Namespace) -> int:
    from app.mirror.commands import sync_command

    return sync_command(args)


def parse_bool(text: str) -> bool:
    """`--src-tls-verify=false`, as skopeo spells it."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


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
    add_mirror_commands(commands)


def add_mirror_commands(commands: argparse._SubParsersAction) -> None:
    exits = "Exit status: 0 all copied, 1 a source failed (the rest copied), 2 usage, 3 bucket unavailable."
    copy = commands.add_parser(
        "copy",
        help="copy an image from an OCI layout, an archive or a registry into the bucket (no service needed)",
        description="SOURCE: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:NAME:TAG], "
        "docker://HOST/NAME:TAG or docker://HOST/NAME@DIGEST. DEST: NAME:TAG, or NAME to keep the source's tag. "
        "Progress goes to stderr, the summary to stdout. " + exits,
    )
    copy.add_argument("source")
    copy.add_argument("destination")
    copy.add_argument("--platform", help="copy only this OS/ARCH[/VARIANT] of an index (default: every platform)")
    copy.add_argument("--no-referrers", action="store_true", help="leave out signatures, SBOMs and other referrers")
    copy.add_argument("--src-creds", metavar="USER:PASS", help="credentials for the source registry")
    copy.add_argument(
        "--src-tls-verify", type=parse_bool, default=True, metavar="BOOL", help="verify the source's TLS certificate"
    )
    copy.add_argument("--json", action="store_true", help="print the summary as JSON (and no progress)")
    copy.set_defaults(handler=storage_faults_exit(run_copy))

    mirror = commands.add_parser(
        "sync",
        help="copy the images a YAML file selects (tags, regex, newest N) into the bucket; idempotent",
        description='See the README\'s "Publish and mirror without a server". ' + exits,
    )
    mirror.add_argument("config", help="YAML file listing the mirrors")
    mirror.add_argument("--json", action="store_true", help="print the summary as JSON (and no progress)")
    mirror.set_defaults(handler=storage_faults_exit(run_sync))
