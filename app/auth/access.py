"""Who may do what to which repository: users and groups mapped to repository patterns and actions.

The rules file (`REGISTRY_AUTH_ACCESS`, YAML or JSON):

    groups:
      team-a: [alice, bob]
    rules:
      - groups: [team-a]
        repositories: ["team-a/*"]
        actions: [pull, push]
      - users: ["*"]              # every htpasswd user (never a workload)
        repositories: ["*"]
        actions: [pull]
      - issuer: https://token.actions.githubusercontent.com   # CI jobs logging in with an ID token
        claims:
          repository_owner: acme
          ref: "refs/tags/v*"
        repositories: ["acme/*"]
        actions: [push]

Patterns are shell-style (`*` also crosses `/`); a user's actions on a repository are the union of every rule
that names them. `push` implies `pull` (no client can push without reading back what it wrote). Without a
file every authenticated user may do everything.

A workload (app.auth.oidc) is named only by rules with its `issuer` whose every claim pattern matches the
token's claim (a list claim matches when one of its items does; numbers and booleans compare as JSON text).
Such a rule must name at least one claim: an issuer like GitHub's signs tokens for every repository it hosts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from app.auth.oidc import Workload

PULL, PUSH, DELETE = "pull", "push", "delete"
ACTIONS = frozenset({PULL, PUSH, DELETE})
EVERY_USER = "*"
EVERY_REPOSITORY = "*"


class AccessError(ValueError):
    """The rules file is malformed; the message says where."""


RULE_KEYS = frozenset({"users", "groups", "issuer", "claims", "repositories", "actions"})


@dataclass(frozen=True)
class Rule:
    users: frozenset[str]
    groups: frozenset[str]
    repositories: tuple[str, ...]
    actions: frozenset[str]
    issuer: str = ""  # set: a rule for workloads of this issuer, with `claims` patterns
    claims: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def names(self, user: str, memberships: frozenset[str]) -> bool:
        return EVERY_USER in self.users or user in self.users or bool(self.groups & memberships)

    def names_workload(self, workload: Workload) -> bool:
        if not self.issuer or self.issuer != workload.issuer:
            return False
        return all(_claim_matches(workload.claims.get(claim), patterns) for claim, patterns in self.claims)


def _claim_matches(value: Any, patterns: tuple[str, ...]) -> bool:
    values = value if isinstance(value, list) else [value]
    texts = [json.dumps(item) if isinstance(item, bool) else str(item) for item in values if _scalar(item)]
    return any(fnmatchcase(text, pattern) for text in texts for pattern in patterns)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


class AccessRules:
    def __init__(self, rules: list[Rule], groups: dict[str, frozenset[str]]) -> None:
        self.rules = rules
        self.groups = groups

    @classmethod
    def allow_everyone(cls) -> AccessRules:
        return cls([Rule(frozenset({EVERY_USER}), frozenset(), (EVERY_REPOSITORY,), ACTIONS)], {})

    @classmethod
    def load(cls, path: Path) -> AccessRules:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise AccessError(f"cannot read {path}: {exc}") from None
        return parse(document)

    @property
    def issuers(self) -> frozenset[str]:
        """The workload issuers the rules name (each must be a trusted one)."""
        return frozenset(rule.issuer for rule in self.rules if rule.issuer)

    def actions(self, user: str | None, repository: str, workload: Workload | None = None) -> frozenset[str]:
        """What `user` (None: anonymous, who is named by no rule) or a `workload` may do on `repository`."""
        granted: set[str] = set()
        for rule in self._rules_of(user, workload):
            if any(fnmatchcase(repository, pattern) for pattern in rule.repositories):
                granted |= rule.actions
        return frozenset(granted)

    def may_list_catalog(self, user: str | None, workload: Workload | None = None) -> bool:
        """The catalog names every repository, so it is for users who may read all of them."""
        return any(
            EVERY_REPOSITORY in rule.repositories and PULL in rule.actions for rule in self._rules_of(user, workload)
        )

    def _rules_of(self, user: str | None, workload: Workload | None) -> list[Rule]:
        if workload is not None:
            return [rule for rule in self.rules if rule.names_workload(workload)]
        if user is None:
            return []
        memberships = frozenset(group for group, members in self.groups.items() if user in members)
        return [rule for rule in self.rules if rule.names(user, memberships)]


def parse(document: Any) -> AccessRules:
    if not isinstance(document, dict) or set(document) - {"groups", "rules"}:
        raise AccessError("expected a mapping with `groups` and `rules`")
    groups = document.get("groups") or {}
    if not isinstance(groups, dict):
        raise AccessError("`groups` must map group names to lists of users")
    parsed_groups = {str(name): frozenset(_strings(members, f"groups.{name}")) for name, members in groups.items()}
    entries = document.get("rules") or []
    if not isinstance(entries, list):
        raise AccessError("`rules` must be a list")
    rules = [_rule(entry, number, parsed_groups) for number, entry in enumerate(entries, start=1)]
    return AccessRules(rules, parsed_groups)


def _rule(entry: Any, number: int, groups: dict[str, frozenset[str]]) -> Rule:
    where = f"rule {number}"
    if not isinstance(entry, dict) or set(entry) - RULE_KEYS:
        raise AccessError(f"{where}: expected users/groups (or issuer and claims), repositories and actions")
    users = frozenset(_strings(entry.get("users", []), f"{where}.users"))
    member_of = frozenset(_strings(entry.get("groups", []), f"{where}.groups"))
    issuer, claims = _workload_terms(entry, where)
    if issuer and (users or member_of):
        raise AccessError(f"{where}: names users/groups and an issuer; write one rule for each")
    if not users and not member_of and not issuer:
        raise AccessError(f"{where}: names no users, no groups and no issuer")
    if unknown := member_of - set(groups):
        raise AccessError(f"{where}: unknown groups {sorted(unknown)}")
    repositories = tuple(_strings(entry.get("repositories", []), f"{where}.repositories"))
    if not repositories:
        raise AccessError(f"{where}: names no repositories")
    actions = set(_strings(entry.get("actions", []), f"{where}.actions"))
    if "*" in actions:
        actions = set(ACTIONS)
    if not actions or actions - ACTIONS:
        raise AccessError(f"{where}: actions must be among pull, push, delete (or *)")
    if PUSH in actions:
        actions.add(PULL)
    return Rule(users, member_of, repositories, frozenset(actions), issuer, claims)


def _workload_terms(entry: dict[str, Any], where: str) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """`issuer` and `claims` of a workload rule: claim name -> a pattern or a list of patterns (any may match)."""
    issuer = entry.get("issuer", "")
    claims = entry.get("claims")
    if not issuer and claims is None:
        return "", ()
    if not isinstance(issuer, str) or not issuer:
        raise AccessError(f"{where}: `claims` need an `issuer`")
    if not isinstance(claims, Mapping) or not claims:
        raise AccessError(f"{where}: an issuer rule must match at least one claim (e.g. repository_owner)")
    parsed = []
    for claim, patterns in claims.items():
        listed = [patterns] if isinstance(patterns, str) else patterns
        parsed.append((str(claim), tuple(_strings(listed, f"{where}.claims.{claim}"))))
    return issuer, tuple(parsed)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise AccessError(f"{where}: expected a list of non-empty strings")
    return value
