"""The `fsck`, `gc`, `uploads`, `copy` and `sync` subcommands of `storj-registry`, on the store the settings name.

Inspection never creates anything: run in the wrong directory, `fsck` and `gc` say there is no store there (exit 3)
instead of creating an empty `./data` and calling it clean, and `uploads list` does not create `./staging`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable

from app.cli import port_number
from app.events import Notifier, Origin, Target
from app.registry import open_uploads
from app.registry.policy import open_policy, parse_duration
from app.settings import Settings, SettingsError, load_settings, store_location, unknown_variables
from app.storage import Storage, StorageFault, open_storage
from app.tools.fsck import fsck
from app.tools.gc import DEFAULT_GRACE_SECONDS, Removal, gc
from app.tools.gc_run import DEFAULT_MARK_SECONDS, DEFAULT_SETTLE_SECONDS, GcRunning, RunTiming, abandon

EXIT_PROBLEMS = 1
EXIT_STORAGE = 3
GC_EVENTS_SECONDS = 30.0  # how long gc tries to deliver its events; the rest is left for the service
GC_ACTOR = "gc"


def existing_store(settings: Settings) -> Storage:
    return open_storage(settings, create=False)


def say_if_empty(command: str, settings: Settings, keys: int) -> None:
    if keys == 0:
        print(f"{command}: the store is empty: nothing was ever pushed to {store_location(settings)}", file=sys.stderr)


def run_fsck(args: argparse.Namespace) -> int:
    settings = load_settings()
    # Longer than the replicas' watch: they have all seen the run before a repair removes what they may believe.
    announce = 2 * settings.gc_watch_seconds + 1
    try:
        report = fsck(existing_store(settings), repair=args.repair, blobs=args.blobs, announce_seconds=announce)
    except GcRunning as exc:
        print(f"storj-registry fsck: {exc}; repair once it is over", file=sys.stderr)
        return EXIT_PROBLEMS
    say_if_empty("fsck", settings, report.keys)
    return EXIT_PROBLEMS if report.left else 0


def run_gc(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.abandon:
        try:
            print(f"storj-registry gc: {abandon(existing_store(settings))}", file=sys.stderr)
        except GcRunning as exc:
            print(f"storj-registry gc: {exc}", file=sys.stderr)
            return EXIT_PROBLEMS
        return 0
    notifier = Notifier(settings)  # before anything is deleted: a wrong events setting stops gc here
    policy = open_policy(settings.policy).policy
    timing = RunTiming(args.settle_seconds, args.mark_seconds)
    signal.signal(signal.SIGTERM, _stop)  # a CronJob's deadline, `timeout`, `kill`: end the run as Ctrl-C does
    try:
        report = gc(
            existing_store(settings), delete=args.delete, grace_seconds=args.grace_seconds, policy=policy, timing=timing
        )
    except GcRunning as exc:
        print(f"storj-registry gc: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    say_if_empty("gc", settings, report.keys)
    announce(notifier, report.removed)
    return 0


def _stop(signum: int, frame: object) -> None:
    """SIGTERM stops gc as Ctrl-C does: the run's `finally` removes its announcement and state."""
    raise KeyboardInterrupt


def announce(notifier: Notifier, removed: list[Removal]) -> None:
    """A `gc.delete` event per removed manifest and blob, delivered now or by the service after its restart."""
    if not notifier.enabled:
        return
    for removal in removed:
        target = Target(removal.repository, removal.digest, removal.media_type)
        notifier.publish("gc.delete", target, Origin(actor=GC_ACTOR))
    asyncio.run(notifier.deliver_then_stop(GC_EVENTS_SECONDS))


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


def run_uploads(args: argparse.Namespace) -> int:
    """List (or purge) the upload sessions in staging untouched for `--older-than`."""
    settings = load_settings()
    purging = args.action == "purge"
    # Purging on S3 also aborts each session's multipart upload, which needs the bucket; listing needs nothing.
    storage = open_storage(settings, create=False) if purging and settings.storage == "s3" else None
    uploads = open_uploads(settings, storage, create=False)
    if not uploads.root.is_dir():
        print(f"uploads: no staging directory at {uploads.root} (REGISTRY_STAGING_DIR)", file=sys.stderr)
        return 0
    stale = uploads.stale_sessions(args.older_than)
    now, total, kept = time.time(), 0, 0
    for session in stale:
        if purging and not uploads.purge(session):
            kept += 1
            continue
        total += session.size
        age = f"{now - session.touched:.0f}s" if session.touched else "unknown"
        print(f"{'purged' if purging else 'upload'} {session.id} {session.name} {session.size} bytes, idle {age}")
    verb = "purged" if purging else "found"
    print(f"uploads: {verb} {len(stale) - kept} session(s), {total} bytes, in {uploads.root}", file=sys.stderr)
    if kept:
        print(f"uploads: {kept} session(s) kept: the bucket could not abort their parts", file=sys.stderr)
    return EXIT_STORAGE if kept else 0


def duration(text: str) -> float:
    """`90`, `90s`, `30m`, `1h`, `2d` in seconds (argparse type)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


Handler = Callable[[argparse.Namespace], int]


def storage_faults_exit(handler: Handler) -> Handler:
    """The frame of each tool: its first line (stderr) names the store it works on, then any REGISTRY_* variable
    that is no setting; an unreachable or missing store ends it with one line and exit status 3, not a traceback.

    Run from another directory, a tool would otherwise work on another `./data` without a word.
    """

    def run(args: argparse.Namespace) -> int:
        print(f"storj-registry {args.command}: store: {store_location(load_settings())}", file=sys.stderr)
        for sentence in unknown_variables():
            print(f"storj-registry {args.command}: warning: {sentence}", file=sys.stderr)
        try:
            return handler(args)
        except StorageFault as exc:
            print(f"storj-registry {args.command}: the store is unavailable: {exc}", file=sys.stderr)
            return EXIT_STORAGE

    return run


def add_tool_commands(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "fsck",
        help="check the store against the layout's invariants (exit 1 while problems remain)",
        description="Problems go to stdout, one per line: PROBLEM <code> <key> <detail>. Progress and summary: stderr. "
        "Exit 0: clean (an empty store says so); 1: problems left; 3: no store there, or it cannot be reached.",
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="fix what the store itself can tell; with --blobs, move each damaged blob to v2/_quarantine/ so the "
        "next push of it writes it again",
    )
    check.add_argument(
        "--blobs",
        action="store_true",
        help="also read every blob and hash it again (reports each that does not match its digest, or is short, "
        "with the repositories using it). It reads the whole store: on Storj every byte read is egress, billed "
        "per GB, and each repository's copy of a shared blob is read",
    )
    check.set_defaults(handler=storage_faults_exit(run_fsck))

    collect = commands.add_parser(
        "gc",
        help="apply the retention rules of REGISTRY_POLICY and find blobs and manifests nothing references "
        "(dry run unless --delete)",
        description="Per repository; each finding is a line on stdout, progress and summary go to stderr. "
        "Exit 3 when there is no store there, or it cannot be reached.",
    )
    collect.add_argument("--delete", action="store_true", help="delete what is found (default: only report)")
    collect.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help=f"keep objects modified this recently: pushes in progress (default {DEFAULT_GRACE_SECONDS})",
    )
    collect.add_argument(
        "--settle-seconds",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        help="with --delete: after announcing the run, wait at most this long for every live replica (and copy, "
        "sync) to acknowledge it; with none running, gc does not wait "
        f"(default {DEFAULT_SETTLE_SECONDS:.0f}: a replica that does not acknowledge by then is taken as stuck)",
    )
    collect.add_argument(
        "--mark-seconds",
        type=float,
        default=DEFAULT_MARK_SECONDS,
        help="with --delete: after marking candidates, wait at most this long for every live replica to claim "
        f"what its pushes rely on and acknowledge (default {DEFAULT_MARK_SECONDS:.0f}: longer than a push)",
    )
    collect.add_argument(
        "--abandon",
        action="store_true",
        help="remove the announcement (and state) of a gc run whose heartbeat has been silent for a minute, as "
        "after a gc killed with SIGKILL: replicas stop heeding it, the next run need not wait to take it over",
    )
    collect.set_defaults(handler=storage_faults_exit(run_gc))

    uploads = commands.add_parser(
        "uploads",
        help="list or purge abandoned upload sessions in the staging directory",
        description="An interrupted push leaves its bytes in REGISTRY_STAGING_DIR until the service purges them "
        "(REGISTRY_UPLOAD_MAX_AGE_SECONDS). Sessions go to stdout, one per line, oldest first; the total to stderr.",
    )
    uploads.add_argument("action", choices=["list", "purge"], help="list: only show; purge: delete them")
    uploads.add_argument(
        "--older-than",
        type=duration,
        default=3600.0,
        metavar="AGE",
        help="only sessions idle this long, e.g. 90s, 30m, 1h, 2d (default: 1h; a push in progress writes "
        "at least every few seconds)",
    )
    uploads.set_defaults(handler=storage_faults_exit(run_uploads))
    add_mirror_commands(commands)
    add_pull_commands(commands)


def run_preview(args: argparse.Namespace) -> int:
    """Serve the store until Ctrl-C (the normal end: exit 0), one line per request on stderr."""
    from app.tools.preview import Answer, Preview

    def log(answer: Answer) -> None:
        print(f"{answer.method} {answer.path} {answer.status}", file=sys.stderr, flush=True)

    try:
        server = Preview(existing_store(load_settings()), args.host, args.port, on_answer=log)
    except OSError as exc:
        raise SettingsError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    with server:
        host = server.url.removeprefix("http://")
        print(f"preview: serving the store read-only as Storj linksharing would at {server.url}", file=sys.stderr)
        print(f"preview: try `docker pull {host}/NAME:TAG`, or `verify-pull {host}/NAME:TAG`", file=sys.stderr)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("preview: stopped", file=sys.stderr)
    return 0


def run_verify_pull(args: argparse.Namespace) -> int:
    import httpx

    from app.tools.verify_pull import UsageError, verify_pull

    try:
        findings = verify_pull(args.reference, tls_verify=args.tls_verify)
    except UsageError as exc:
        print(f"storj-registry verify-pull: {exc}", file=sys.stderr)
        return 2
    except httpx.ConnectError:
        print(f"storj-registry verify-pull: nothing answers at {args.reference} (cannot connect)", file=sys.stderr)
        return EXIT_STORAGE
    except httpx.TimeoutException:
        print(f"storj-registry verify-pull: {args.reference} did not answer in time", file=sys.stderr)
        return EXIT_STORAGE
    except httpx.HTTPError as exc:
        print(f"storj-registry verify-pull: {args.reference} failed: {type(exc).__name__}", file=sys.stderr)
        return EXIT_STORAGE
    print(f"verify-pull: {findings.summary()}", file=sys.stderr)
    return EXIT_PROBLEMS if findings.problems else 0


def add_pull_commands(commands: argparse._SubParsersAction) -> None:
    shown = commands.add_parser(
        "preview",
        help="serve the store read-only exactly as Storj linksharing would (pull from it to check the layout)",
        description="Serves the store the settings name (the data directory, or the bucket and prefix) as static "
        "files, with linksharing's rules only: GET and HEAD, the stored Content-Type, index.html for paths ending "
        "in /, 303 from /v2 to /v2/, 404.html, single ranges. No registry logic: a pull that works from here works "
        "from the bucket's public URL. On S3 each request reads the bucket (egress on Storj). Ctrl-C stops it.",
    )
    shown.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    shown.add_argument("--port", type=port_number, default=8000, help="TCP port (default: %(default)s)")
    shown.set_defaults(handler=storage_faults_exit(run_preview))

    verify = commands.add_parser(
        "verify-pull",
        help="pull a tag through a public URL as docker does and check types, digests and sizes",
        description="REFERENCE: [https://]HOST[:PORT]/NAME:TAG (or @DIGEST); http for a loopback host. Fetches /v2/, "
        "the manifest by tag (HEAD and GET, docker's Accept) and by digest, every child of an index, every config "
        "and layer (streamed), and tags/list. Each problem goes to stdout in words; exit 0 when the pull is sound, "
        "1 when it is not, 3 when the URL cannot be reached. It reads every blob: egress on Storj.",
    )
    verify.add_argument("reference")
    verify.add_argument(
        "--tls-verify", type=parse_bool, default=True, metavar="BOOL", help="verify the server's TLS certificate"
    )
    verify.set_defaults(handler=run_verify_pull)


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
        description="The YAML file's keys: docs/operations.md, 'Publish and mirror without a server'. " + exits,
    )
    mirror.add_argument("config", help="YAML file listing the mirrors")
    mirror.add_argument("--json", action="store_true", help="print the summary as JSON (and no progress)")
    mirror.set_defaults(handler=storage_faults_exit(run_sync))
