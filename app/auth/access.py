"""Who may do what to which repository: users and groups mapped to repository patterns and actions.

The rules file (`REGISTRY_AUTH_ACCESS`, YAML or JSON):

    groups:
      team-a: [alice, bob]
    rules:
      - groups: [team-a]
        repositories: ["team-a/*"]
        actions: [pull, push]
      - users: ["*"]              # every authenticated user
        repositories: ["*"]
        actions: [pull]

Patterns are shell-style (`*` also crosses `/`); a user's actions on a repository are the union of every rule
that names them. `push` implies `pull` (no client can push without reading back what it wrote). Without a
file every authenticated user may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

PULL, PUSH, DELETE = "pull", "push", "delete"
ACTIONS = frozenset({PULL, PUSH, DELETE})
EVERY_USER = "*"
EVERY_REPOSITORY = "*"


class AccessError(ValueError):
    """The rules file is malformed; the message says where."""


@dataclass(frozen=True)
class Rule:
    users: frozenset[str]
    groups: frozenset[str]
    repositories: tuple[str, ...]
    actions: frozenset[str]

    def names(self, user: str, memberships: frozenset[str]) -> bool:
        return EVERY_USER in self.users or user in self.users or bool(self.groups & memberships)


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

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """What `user` (None: anonymous, who is named by no rule) may do on `repository`."""
        if user is None:
            return frozenset()
        granted: set[str] = set()
        for rule in self._rules_of(user):
            if any(fnmatchcase(repository, pattern) for pattern in rule.repositories):
                granted |= rule.actions
        return frozenset(granted)

    def may_list_catalog(self, user: str | None) -> bool:
        """The catalog names every repository, so it is for users who may read all of them."""
        if user is None:
            return False
        return any(EVERY_REPOSITORY in rule.repositories and PULL in rule.actions for rule in self._rules_of(user))

    def _rules_of(self, user: str) -> list[Rule]:
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
    if not isinstance(entry, dict) or set(entry) - {"users", "groups", "repositories", "actions"}:
        raise AccessError(f"{where}: expected users/groups, repositories and actions")
    users = frozenset(_strings(entry.get("users", []), f"{where}.users"))
    member_of = frozenset(_strings(entry.get("groups", []), f"{where}.groups"))
    if not users and not member_of:
        raise AccessError(f"{where}: names no users and no groups")
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
    return Rule(users, member_of, repositories, frozenset(actions))


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise AccessError(f"{where}: expected a list of non-empty strings")
    return value
