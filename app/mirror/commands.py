"""What `storj-registry copy` and `storj-registry sync` run (their options are in app/tools/commands.py).

Exit status: 0 every image copied; 1 some source failed (unreachable, refused, unknown, content not matching
its digests), the others copied; 2 a usage or configuration error, nothing copied; 3 the bucket is unavailable
(from app.tools.commands).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from app.events import Origin
from app.mirror.copier import Copier, Platform
from app.mirror.jobs import Outcome, UsageError, open_source, parse_destination, run_job, summarise
from app.mirror.progress import reporter
from app.mirror.remote import RemoteOptions
from app.mirror.source import SourceError
from app.mirror.sync import load_config, run_sync
from app.registry import build_registry
from app.registry.events import ORIGIN
from app.settings import load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2
COPY_ACTOR = "storj-registry copy"  # who events name as having made the change
SYNC_ACTOR = "storj-registry sync"


def copy_command(args: argparse.Namespace) -> int:
    try:
        name, tag = parse_destination(args.destination)
        platform = Platform.parse(args.platform) if args.platform else None
        options = RemoteOptions(credentials=parse_credentials(args.src_creds), tls_verify=args.src_tls_verify)
        source = open_source(args.source, options)
    except (UsageError, ValueError) as exc:
        return usage_error(args, exc)
    except SourceError as exc:
        summarise([Outcome(args.source, args.destination, error=str(exc))], args.json, sys.stdout)
        return EXIT_FAILED
    settings = load_settings()

    async def copy() -> Outcome:
        events = reporter(args.json)
        ORIGIN.set(Origin(actor=COPY_ACTOR))
        try:
            async with build_registry(settings).running() as registry:  # gc runs, events: as a push through serve
                copier = Copier(registry, events, platform=platform, with_referrers=not args.no_referrers)
                await registry.page.ensure()  # a bucket filled by copying shows the catalog page, as serve does
                await registry.warm()  # the location records: blobs in other repositories are copied, not sent
                return await run_job(copier, source, args.source, None, name, tag)
        finally:
            events.close()
            await source.aclose()

    outcome = asyncio.run(copy())
    summarise([outcome], args.json, sys.stdout)
    return 0 if outcome.ok else EXIT_FAILED


def sync_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config))
    except UsageError as exc:
        return usage_error(args, exc)
    settings = load_settings()

    async def sync() -> list[Outcome]:
        events = reporter(args.json)
        ORIGIN.set(Origin(actor=SYNC_ACTOR))
        try:
            async with build_registry(settings).running() as registry:  # gc runs, events: as a push through serve
                await registry.page.ensure()
                await registry.warm()
                return await run_sync(registry, config, events)
        finally:
            events.close()

    outcomes = asyncio.run(sync())
    summarise(outcomes, args.json, sys.stdout)
    return 0 if all(outcome.ok for outcome in outcomes) else EXIT_FAILED


def parse_credentials(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise UsageError("--src-creds takes USER:PASSWORD")
    return user, password


def usage_error(args: argparse.Namespace, exc: Exception) -> int:
    print(f"storj-registry {args.command}: {exc}", file=sys.stderr)
    return EXIT_USAGE
