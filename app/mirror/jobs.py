"""One copy job (a source reference into a repository of the bucket), its outcome, and the summary of many.

Shared by `copy` (one job) and `sync` (one per selected tag and destination). A failed job is recorded and
the others go on; only an unreachable bucket stops everything (app.storage.StorageFault propagates).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from app.cli import interrupts_held
from app.errors import RegistryError
from app.mirror.copier import Copier, Tally
from app.mirror.layouts import open_local
from app.mirror.remote import RemoteOptions, RemoteRegistry
from app.mirror.source import Source, SourceError
from app.registry.references import DIGEST_RE, check_name, check_tag

LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UsageError(Exception):
    """A source or destination that cannot be understood: exit status 2, nothing copied."""


def open_source(spec: str, options: RemoteOptions) -> Source:
    """`docker://…`, `oci:…`, `oci-archive:…` or `docker-archive:…` (skopeo's transport names)."""
    if spec.startswith("docker://"):
        return RemoteRegistry(spec.removeprefix("docker://"), options)
    transport, colon, location = spec.partition(":")
    if not colon or transport not in LOCAL_TRANSPORTS or not location:
        raise UsageError(
            f"unknown source {spec!r}: use docker://HOST/NAME:TAG, oci:DIR, oci-archive:FILE or docker-archive:FILE"
        )
    return open_local(transport, location)


def parse_destination(text: str) -> tuple[str, str | None]:
    """`NAME:TAG`, or `NAME` to keep the source's tag; checked by the rules a push to the service meets."""
    name, _, tag = text.partition(":")
    try:
        check_name(name)
        if tag:
            check_tag(tag)
    except RegistryError as exc:
        raise UsageError(f"{exc.message}: {text!r}") from None
    return name, tag or None


@dataclass
class Outcome:
    source: str
    destination: str
    digest: str | None = None
    error: str | None = None
    tally: Tally = field(default_factory=Tally)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "digest": self.digest, "ok": self.ok,
                "error": self.error, **asdict(self.tally)}  # fmt: skip


async def run_job(
    copier: Copier, source: Source, label: str, reference: str | None, name: str, tag: str | None
) -> Outcome:
    """Copy `reference` (default: the image the source names) to `name`, tagged `tag` (default: the source's tag).

    `label` names the source in the summary.
    """
    outcome = Outcome(source=label, destination=name)
    before = Tally(**asdict(copier.tally))
    try:
        reference = reference or source.default_reference()
        if reference is None:
            raise SourceError(f"{source.describe()}: name an image")
        if tag is None and not DIGEST_RE.fullmatch(reference):
            tag = reference
        outcome.destination = f"{name}:{tag}" if tag else name
        _check_offered(reference, tag)
        outcome.digest = await copier.copy(source, reference, name, tag)
    except (SourceError, RegistryError) as exc:
        outcome.error = str(exc) if isinstance(exc, SourceError) else describe_refusal(exc)
    outcome.tally = _difference(copier.tally, before)
    return outcome


def _check_offered(reference: str, tag: str | None) -> None:
    """A reference or tag a source offers (an OCI layout's ref name, `RepoTags`, a tags list) is checked before
    anything is fetched or written: `../../other/manifests/v1` is no tag, and no key may be built from it."""
    if not DIGEST_RE.fullmatch(reference):
        check_tag(reference)
    if tag is not None:
        check_tag(tag)


def _difference(after: Tally, before: Tally) -> Tally:
    return Tally(**{key: getattr(after, key) - getattr(before, key) for key in asdict(after)})


def summarise(outcomes: list[Outcome], json_output: bool, out: TextIO) -> None:
    """The summary on stdout: one line per job and a total, or one JSON document.

    The work is done by now: a Ctrl-C arriving while the summary prints is held back, so it cannot print success
    and still end the command as interrupted (exit 130).
    """
    with interrupts_held():
        _print_summary(outcomes, json_output, out)


def _print_summary(outcomes: list[Outcome], json_output: bool, out: TextIO) -> None:
    total = Tally()
    for outcome in outcomes:
        total.add(outcome.tally)
    failed = sum(not outcome.ok for outcome in outcomes)
    if json_output:
        document = {"jobs": [o.to_json() for o in outcomes], "total": {**asdict(total), "failed": failed}}
        print(json.dumps(document, indent=2), file=out)
        return
    for outcome in outcomes:
        print(job_line(outcome), file=out)
    if outcomes and not failed and total.writes == 0:
        print(f"up to date: {len(outcomes)} image(s) already in the bucket, nothing written", file=out)
    else:
        print(f"{len(outcomes) - failed} copied, {failed} failed; {describe(total)}", file=out)


def job_line(outcome: Outcome) -> str:
    """One line, whatever the source named: its control characters are escaped (see `one_line`)."""
    source, destination = one_line(outcome.source), one_line(outcome.destination)
    if not outcome.ok:
        return f"FAILED {source} -> {destination}: {one_line(outcome.error or '')}"
    if outcome.tally.writes == 0:
        return f"up to date {source} -> {destination} {outcome.digest}"
    return f"copied {source} -> {destination} {outcome.digest}: {describe(outcome.tally)}"


def describe_refusal(error: RegistryError) -> str:
    detail = f" {json.dumps(error.detail)}" if error.detail is not None else ""
    return f"{error.code}: {error.message}{detail}"


def one_line(text: str) -> str:
    """`text` with its control characters escaped: a tag or message from a source cannot forge a summary line."""
    return CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def describe(tally: Tally) -> str:
    return (
        f"blobs {tally.blobs_uploaded} uploaded ({tally.bytes_uploaded} bytes), {tally.blobs_mounted} copied "
        f"in the bucket, {tally.blobs_present} present; manifests {tally.manifests_written} written, "
        f"{tally.manifests_present} present"
    )
