"""Lifecycle rules for tags: which may never move, and how long the rest are kept (`REGISTRY_POLICY`).

The policy file (YAML):

    immutable:
      - repositories: ["release/*"]
        tags: ["v*"]                 # a matching tag, once pushed, never points elsewhere nor goes away
    retention:                       # applied by `storj-registry gc`; the first rule naming a repository wins
      - repositories: ["ci/*"]
        keep_last: 3                 # tags kept per repository, newest push first
        keep_tags: ["latest", "stable"]
      - repositories: ["preview/*"]
        expire_after: 7d             # tags pushed longer ago than this go (then their content, by gc)
    untagged_after: 1d               # manifests nothing tags nor references go after this (default: gc's grace)

Repository and tag patterns are shell-style, `*` also crossing `/`, as in the access rules (app/auth/access.py).
The service reads the file when it changes (its size or mtime, looked at before each use) and on SIGHUP; a
file that no longer parses leaves the last good rules in force and is logged, so a typo cannot unlock tags. Nor
can an editor caught mid-write: a file read again that names no immutable rule (empty, half-written, or
`immutable:` left empty) keeps the immutable rules in force, and says so; they go with a restart of the service.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from app.errors import Denied
from app.settings import SettingsError

log = logging.getLogger("storj_registry")

DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TOP_KEYS = frozenset({"immutable", "retention", "untagged_after"})
IMMUTABLE_KEYS = frozenset({"repositories", "tags"})
RETENTION_KEYS = frozenset({"repositories", "keep_last", "keep_tags", "expire_after"})


class PolicyError(ValueError):
    """The policy file is malformed; the message says where."""


def parse_duration(text: object) -> float:
    """`90`, `90s`, `30m`, `1h`, `7d`, `2w` in seconds."""
    match = DURATION_RE.fullmatch(str(text).strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 1h, 7d or 2w")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


@dataclass(frozen=True)
class ImmutableRule:
    number: int
    repositories: tuple[str, ...]
    tags: tuple[str, ...]

    def matches(self, repository: str, tag: str) -> bool:
        return _any(repository, self.repositories) and _any(tag, self.tags)

    def matches_repository(self, repository: str) -> bool:
        return _any(repository, self.repositories)

    def describe(self) -> str:
        return (
            f"immutable rule {self.number} (repositories {', '.join(self.repositories)}; tags {', '.join(self.tags)})"
        )


@dataclass(frozen=True)
class RetentionRule:
    number: int
    repositories: tuple[str, ...]
    keep_last: int | None = None
    keep_tags: tuple[str, ...] = ()
    expire_after: float | None = None  # seconds

    def describe(self) -> str:
        return f"retention rule {self.number} ({', '.join(self.repositories)})"


@dataclass(frozen=True)
class Policy:
    immutable: tuple[ImmutableRule, ...] = ()
    retention: tuple[RetentionRule, ...] = ()
    untagged_after: float | None = None  # seconds

    def immutable_rule(self, repository: str, tag: str) -> ImmutableRule | None:
        """The first rule that forbids moving or deleting `tag` in `repository`."""
        return next((rule for rule in self.immutable if rule.matches(repository, tag)), None)

    def retention_for(self, repository: str) -> RetentionRule | None:
        return next((rule for rule in self.retention if _any(repository, rule.repositories)), None)


def _any(text: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(text, pattern) for pattern in patterns)


def load(path: Path) -> Policy:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read {path}: {exc}") from None
    return parse(document)


def parse(document: Any) -> Policy:
    if document is None:
        return Policy()
    if not isinstance(document, dict) or set(document) - TOP_KEYS:
        raise PolicyError(f"expected a mapping with some of {', '.join(sorted(TOP_KEYS))}")
    immutable = [_immutable(entry, n) for n, entry in enumerate(_list(document, "immutable"), start=1)]
    retention = [_retention(entry, n) for n, entry in enumerate(_list(document, "retention"), start=1)]
    untagged = document.get("untagged_after")
    return Policy(
        tuple(immutable), tuple(retention), None if untagged is None else _duration(untagged, "untagged_after")
    )


def _list(document: dict[str, Any], key: str) -> list[Any]:
    entries = document.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PolicyError(f"`{key}` must be a list of rules")
    return entries


def _immutable(entry: Any, number: int) -> ImmutableRule:
    where = f"immutable rule {number}"
    if not isinstance(entry, dict) or set(entry) - IMMUTABLE_KEYS:
        raise PolicyError(f"{where}: expected repositories and tags")
    return ImmutableRule(number, _patterns(entry, "repositories", where), _patterns(entry, "tags", where))


def _retention(entry: Any, number: int) -> RetentionRule:
    where = f"retention rule {number}"
    if not isinstance(entry, dict) or set(entry) - RETENTION_KEYS:
        raise PolicyError(f"{where}: expected repositories with keep_last, keep_tags and/or expire_after")
    keep_last = entry.get("keep_last")
    if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 0):
        raise PolicyError(f"{where}.keep_last: expected a whole number of tags, 0 or more")
    expire = entry.get("expire_after")
    if keep_last is None and expire is None:
        raise PolicyError(f"{where}: names neither keep_last nor expire_after, so it would keep everything")
    keep_tags = tuple(_strings(entry.get("keep_tags", []), f"{where}.keep_tags"))
    expire_after = None if expire is None else _duration(expire, f"{where}.expire_after")
    return RetentionRule(number, _patterns(entry, "repositories", where), keep_last, keep_tags, expire_after)


def _patterns(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    found = _strings(entry.get(key, []), f"{where}.{key}")
    if not found:
        raise PolicyError(f"{where}: names no {key}")
    return tuple(found)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PolicyError(f"{where}: expected a list of non-empty strings")
    return value


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def open_policy(path: Path | None) -> PolicyFile:
    """The policy file named by REGISTRY_POLICY; a malformed one is a one-line configuration error."""
    try:
        return PolicyFile(path)
    except PolicyError as exc:
        raise SettingsError.naming("REGISTRY_POLICY", exc) from None


class PolicyFile:
    """The rules in force: the file as last read, read again when it changed or on `reload()` (SIGHUP)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: tuple[int, int] | None = None
        self.policy = Policy()
        if path is not None:
            self.policy = load(path)  # at start-up a bad file stops the service: nothing is in force yet
            self.seen = self._signature()

    def current(self) -> Policy:
        if self.path is not None and self._signature() != self.seen:
            self.reload()
        return self.policy

    def reload(self) -> None:
        if self.path is None:
            return
        self.seen = self._signature()
        try:
            fresh = load(self.path)
        except PolicyError as exc:
            log.error("policy file not reloaded, the previous rules stay in force: %s", exc)
            return
        if self.policy.immutable and not fresh.immutable:
            fresh = replace(fresh, immutable=self.policy.immutable)
            log.warning(
                "policy file %s now names no immutable rule (empty, half-written, or `immutable:` empty): the %d "
                "immutable rule(s) in force stay; restart the service to drop them",
                self.path,
                len(fresh.immutable),
            )
        self.policy = fresh
        log.info("policy file %s loaded: %d immutable, %d retention rule(s)", self.path, *self._counts())

    def _counts(self) -> tuple[int, int]:
        return len(self.policy.immutable), len(self.policy.retention)

    def _signature(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size


def refusal(rule: ImmutableRule, repository: str, tag: str, change: str) -> Denied:
    """The OCI error for a change to an immutable tag: `denied`, naming the tag and the rule, as docker prints it."""
    return Denied(
        f"tag {repository}:{tag} is immutable ({rule.describe()}) and cannot be {change}; push under a new tag",
        detail={"name": repository, "tag": tag, "rule": f"immutable[{rule.number}]"},
    )
