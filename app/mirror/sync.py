"""`storj-registry sync CONFIG.yaml`: keep repositories of the bucket in step with upstream images.

```yaml
mirrors:
  - source: docker://registry-1.docker.io/library/alpine   # or oci:DIR, oci-archive:FILE, docker-archive:FILE
    destination: mirror/alpine       # default: the source's repository name; a list copies to several
    tags: ["3.20"]                   # exact tags, and/or
    tag_regex: '^3\\.\\d+$'          # every tag matching (re.search), and/or
    newest: 3                        # the newest N by version among those matched (or all tags)
    platform: linux/amd64            # default: every platform of an index
    referrers: true                  # signatures, SBOMs
    credentials_env: ALPINE_CREDS    # a variable holding USER:PASS (default: ~/.docker/config.json)
    tls_verify: true
```
A run copies what is missing and nothing else: a second run with nothing new upstream writes nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.mirror.copier import Copier, Events, Platform
from app.mirror.jobs import Outcome, UsageError, open_source, parse_destination, run_job
from app.mirror.remote import RemoteOptions, parse_remote
from app.mirror.source import Source, SourceError
from app.registry import Registry
from app.registry.references import TAG_RE

VERSION_RE = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


class Mirror(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    destination: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    tag_regex: str | None = None
    newest: Annotated[int, Field(ge=1)] | None = None
    platform: str | None = None
    referrers: bool = True
    credentials_env: str | None = None
    tls_verify: bool = True

    @field_validator("destination", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: list[str]) -> list[str]:
        invalid = [tag for tag in value if not TAG_RE.fullmatch(tag)]
        if invalid:
            raise ValueError(f"not tags: {', '.join(repr(tag[:130]) for tag in invalid)}")
        return value

    @field_validator("tag_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        try:
            return value if value is None else re.compile(value).pattern
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        if value is not None:
            Platform.parse(value)
        return value

    @model_validator(mode="after")
    def _selects_tags(self) -> Mirror:
        if not (self.tags or self.tag_regex or self.newest):
            raise ValueError("choose tags: `tags`, `tag_regex` and/or `newest`")
        return self

    def destinations(self) -> list[str]:
        """The repositories to fill; by default the source's own repository name."""
        if self.destination:
            return self.destination
        if self.source.startswith("docker://"):
            return [parse_remote(self.source.removeprefix("docker://")).name]
        raise ValueError(f"{self.source}: a local source needs a `destination`")

    def remote_options(self) -> RemoteOptions:
        credentials = None
        if self.credentials_env:
            user, colon, password = os.environ.get(self.credentials_env, "").partition(":")
            if not colon:
                raise UsageError(f"{self.credentials_env} must hold USER:PASS")
            credentials = (user, password)
        return RemoteOptions(credentials=credentials, tls_verify=self.tls_verify)


class SyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mirrors: list[Mirror]


def load_config(path: Path) -> SyncConfig:
    """The configuration, or a UsageError of one line naming the file, the line and the key that is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    try:
        config = SyncConfig.model_validate(document)
    except ValidationError as exc:
        raise UsageError(_first_mistake(path, text, exc)) from None
    for index, mirror in enumerate(config.mirrors):
        try:
            for destination in mirror.destinations():
                parse_destination(destination)
        except (ValueError, UsageError) as exc:
            raise UsageError(_located(path, text, ("mirrors", index, "destination"), str(exc))) from None
    return config


def _first_mistake(path: Path, text: str, error: ValidationError) -> str:
    """pydantic's first complaint, in words, at its line (the others show once it is fixed)."""
    first = error.errors()[0]
    location = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        model = Mirror if len(location) > 1 else SyncConfig
        message = (
            f"not a key of {'a mirror' if model is Mirror else 'the file'} (keys: {', '.join(model.model_fields)})"
        )
    elif first["type"] == "missing":
        message = "missing"
    elif not location:
        message = "the file must hold a mapping with a `mirrors:` list"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    return _located(path, text, location, message)


def _located(path: Path, text: str, location: tuple[str | int, ...], message: str) -> str:
    """`FILE:LINE: KEY: MESSAGE`, the key spelt as `mirrors[0].tags`."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    line = _line_of(text, location)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _line_of(text: str, location: tuple[str | int, ...]) -> int | None:
    """The line (1-based) of the key or item at `location` in the YAML text, else of the nearest one above it."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def version_key(tag: str) -> tuple[int, int, int] | None:
    """`[v]MAJOR[.MINOR[.PATCH]]` as a sortable key; other tags (pre-releases, suffixes) are not versions."""
    found = VERSION_RE.fullmatch(tag)
    if found is None:
        return None
    major, minor, patch = (int(part) if part else 0 for part in found.groups())
    return major, minor, patch


def select_tags(mirror: Mirror, available: list[str]) -> list[str]:
    """The exact tags, plus those matching the regex, cut to the newest N versions when `newest` is set.

    Only valid tags are candidates: an upstream's list may hold anything (`1.0/../../x`, numbers, objects).
    """
    valid = [tag for tag in available if isinstance(tag, str) and TAG_RE.fullmatch(tag)]
    matched = [tag for tag in valid if mirror.tag_regex and re.search(mirror.tag_regex, tag)]
    if mirror.newest:
        pool = matched if mirror.tag_regex else valid
        versions = sorted((key, tag) for tag in pool if (key := version_key(tag)) is not None)
        matched = [tag for _, tag in versions[-mirror.newest :]]
    return list(dict.fromkeys([*mirror.tags, *matched]))


async def sync_mirror(copier: Copier, mirror: Mirror, source: Source) -> list[Outcome]:
    """Every selected tag into every destination; a failure is recorded and the rest go on."""
    try:
        available = await source.tags() if (mirror.tag_regex or mirror.newest) else []
    except SourceError as exc:
        return [Outcome(mirror.source, ", ".join(mirror.destinations()), error=str(exc))]
    outcomes = []
    for destination in mirror.destinations():
        name, _ = parse_destination(destination)
        for tag in select_tags(mirror, available):
            outcomes.append(await run_job(copier, source, f"{mirror.source}:{tag}", tag, name, tag))
    return outcomes


async def run_sync(registry: Registry, config: SyncConfig, events: Events) -> list[Outcome]:
    """Each mirror in turn, with its own platform and referrer choices, into the one bucket."""
    outcomes: list[Outcome] = []
    for mirror in config.mirrors:
        platform = Platform.parse(mirror.platform) if mirror.platform else None
        copier = Copier(registry, events, platform=platform, with_referrers=mirror.referrers)
        try:
            source = open_source(mirror.source, mirror.remote_options())
        except (SourceError, UsageError) as exc:
            outcomes.append(Outcome(mirror.source, ", ".join(mirror.destinations()), error=str(exc)))
            continue
        try:
            outcomes += await sync_mirror(copier, mirror, source)
        finally:
            await source.aclose()
    return outcomes
